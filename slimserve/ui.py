"""Terminal rendering shared by the commands: a rich progress display on a TTY, silence otherwise.

One row per stage, each shown once:
- a stage of known size (`total`) has a bar and `done/total`; one of unknown length has only a spinner
  (no bar, no `0/?`); a row that ended shows ✓ (✗ when its stage raised) and stops its clock;
- a stage opened inside a stage of unknown length in the same thread ("step int8" runs "int8: ONNX Runtime
  dynamic quantization"; "candidate int8" runs its steps and evaluation) is not a row of its own: the
  outer row shows `outer › inner` while the inner runs, with the inner's bar when it has a size, then
  goes back to what it showed. A stage inside a stage of known size ("build 5 candidates") is its own row.
  Nesting is tracked per thread, so candidates built in parallel (--jobs) each keep their own row.

The rows' progress lives in task fields (`done`, `of`), never in rich's own `total`: a row that lends
itself to inner stages would otherwise be marked finished by the first inner stage that completes.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from slimserve.progress import NULL_PROGRESS, Progress, StageHandle


@dataclass
class _Row:
    """An open stage: the row it draws on, that row's own name, and what the row shows while it runs."""

    task_id: Any
    name: str
    shown: str
    total: int | None


class _RichHandle:
    def __init__(self, display: RichProgress, task_id: Any) -> None:
        self._display = display
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        self._display.advance(self._task_id, n)


def _columns() -> tuple[Any, ...]:
    """Status (spinner, ✓ or ✗), description, and a bar and count only for a stage of known size."""
    from rich.progress import ProgressColumn, SpinnerColumn, TextColumn
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    class Status(SpinnerColumn):
        def render(self, task: Any) -> Any:
            if task.fields.get("failed"):
                return Text("✗", style="red")
            return Text("✓", style="green") if task.fields.get("over") else super().render(task)

    class Bar(ProgressColumn):
        def render(self, task: Any) -> Any:
            of = task.fields.get("of")
            if of is None:
                return Text("")
            return ProgressBar(total=max(1, of), completed=min(task.fields.get("done", 0), of), width=40,
                               animation_time=task.get_time())

    class Count(ProgressColumn):
        def render(self, task: Any) -> Any:
            of = task.fields.get("of")
            return Text("" if of is None else f"{task.fields.get('done', 0)}/{of}", style="progress.download")

    class Elapsed(ProgressColumn):
        def render(self, task: Any) -> Any:
            seconds = int(task.elapsed or 0)
            return Text(f"{seconds // 60}:{seconds % 60:02d}", style="progress.elapsed")

    return Status(), TextColumn("{task.description}"), Bar(), Count(), Elapsed()


class RichProgress:
    """Each stage becomes a row with a spinner and elapsed time, and a bar when its size is known."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import Progress as _Progress

        self._progress = _Progress(*_columns(), console=Console(file=stream), transient=False)
        self._local = threading.local()
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:  # noqa: PYI034  # py3.10 has no typing.Self
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, task_id: Any, n: int) -> None:
        with self._lock:
            task = next(t for t in self._progress.tasks if t.id == task_id)
            self._progress.update(task_id, done=task.fields.get("done", 0) + n)

    def rows(self) -> list[tuple[str, str]]:
        """What each row shows now: (description, status), status one of running, done, failed (for tests)."""
        return [(str(t.description), "failed" if t.fields.get("failed") else "done" if t.fields.get("over")
                 else "running") for t in self._progress.tasks]

    def _stack(self) -> list[_Row]:
        stack: list[_Row] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[StageHandle]:
        stack = self._stack()
        parent = stack[-1] if stack else None
        if parent is not None and parent.total is None:  # a part of a row of unknown length: shown there
            row = _Row(parent.task_id, parent.name, f"{parent.name} › {description}", total)
            self._progress.update(row.task_id, description=row.shown, of=total, done=0)
            stack.append(row)
            try:
                yield _RichHandle(self, row.task_id)
            finally:
                stack.pop()
                self._progress.update(row.task_id, description=parent.shown, of=None, done=0)
            return
        task_id = self._progress.add_task(description, total=None, of=total, done=0, over=False, failed=False)
        stack.append(_Row(task_id, description, description, total))
        try:
            yield _RichHandle(self, task_id)
        except BaseException:
            self._progress.update(task_id, failed=True)
            raise
        finally:
            stack.pop()
            self._progress.stop_task(task_id)  # the clock stops; a sized row keeps its bar and count
            self._progress.update(task_id, over=True)


@contextlib.contextmanager
def progress_for(stream: TextIO = sys.stderr, enabled: bool = True) -> Iterator[Progress]:
    """A live display when `stream` is a terminal, otherwise the silent default."""
    if enabled and stream.isatty():
        with RichProgress(stream) as progress:
            yield progress
    else:
        yield NULL_PROGRESS
