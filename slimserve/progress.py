"""How long-running parts report progress without printing: they call a `Progress`; the CLI renders it.

Library code receives a `Progress` and calls `step()` around each stage. The default does nothing, so
the parts stay silent when used as a library or when output is not a terminal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Progress(Protocol):
    def stage(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager[StageHandle]:
        """Open a stage (export, a recipe step, evaluation); `total` is the number of advances expected."""
        ...


class StageHandle(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _NullHandle:
    def advance(self, n: int = 1) -> None:
        return None


class NullProgress:
    """Reports nothing: the default for library use and non-TTY output."""

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[StageHandle]:
        yield _NullHandle()


NULL_PROGRESS: Progress = NullProgress()
