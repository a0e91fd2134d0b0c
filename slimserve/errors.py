"""Exceptions the parts raise and the CLI turns into one `error:` line plus a `hint:`.

The parts never print or exit; they raise one of these. Anything else reaching the CLI is a bug and is
reported as such (with the traceback only under --debug).
"""

from __future__ import annotations


class SlimserveError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible combination of options."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ToolError(SlimserveError):
    """A library or tool we drive (onnx, onnxruntime, pip, a registry) failed; keeps the cause for --debug."""

    exit_code = 1


class LimitExceeded(SlimserveError):
    """A measured value breaks a budget or a platform limit (exit 1: the input was fine, the result is not)."""

    exit_code = 1


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's (or a tool's) text, for wrapping noisy errors in one line."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return "no output" if isinstance(exc, str) else type(exc).__name__
