"""Notes a result carries: caveats for the user, and diagnostics for whoever debugs the tools.

Steps record notes in the manifest (slimserve.json `notes`, and each step's `notes`). Most are caveats a
user should read on the terminal ("float16 compute is usually slower than float32 on CPU"). Some only say
how a library behaved on the way ("symbolic shape inference failed (object of type 'NoneType' has no
len()); used ONNX shape inference"): nothing to act on, alarming out of context. Those are written with
`diagnostic(...)`, which prefixes them; they stay in the manifest for --debug and bug reports, and
`for_terminal` leaves them out of what the commands print unless --debug is given.
"""

from __future__ import annotations

from collections.abc import Iterable

DIAGNOSTIC = "diagnostic: "


def diagnostic(text: str) -> str:
    """A note about the tools' internals, kept in the manifest but not printed by default."""
    return DIAGNOSTIC + text


def is_diagnostic(note: str) -> bool:
    return note.startswith(DIAGNOSTIC)


def for_terminal(notes: Iterable[str], debug: bool = False) -> list[str]:
    """The notes a command prints: every caveat, and the diagnostics only under --debug."""
    return [n for n in notes if debug or not is_diagnostic(n)]
