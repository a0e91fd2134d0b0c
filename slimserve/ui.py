"""Terminal rendering shared by the commands: a rich progress display on a TTY, silence otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

from slimserve.progress import NULL_PROGRESS, Progress, StageHandle


class _RichHandle:
    def __init__(self, progress: object, task_id: object) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task_id, n)  # type: ignore[attr-defined]


class RichProgress:
    """Each stage becomes a row with a spinner, elapsed time and (when its size is known) a bar."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _Progress

        self._progress = _Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=Console(file=stream), transient=False,
        )

    def __enter__(self) -> RichProgress:  # noqa: PYI034  # py3.10 has no typing.Self
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[StageHandle]:
        task_id = self._progress.add_task(description, total=total)
        try:
            yield _RichHandle(self._progress, task_id)
        finally:
            task = self._progress.tasks[[t.id for t in self._progress.tasks].index(task_id)]
            self._progress.update(task_id, total=task.completed or 1, completed=task.completed or 1)


@contextlib.contextmanager
def progress_for(stream: TextIO = sys.stderr, enabled: bool = True) -> Iterator[Progress]:
    """A live display when `stream` is a terminal, otherwise the silent default."""
    if enabled and stream.isatty():
        with RichProgress(stream) as progress:
            yield progress
    else:
        yield NULL_PROGRESS
