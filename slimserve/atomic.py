"""Nothing half-written: outputs are built in a sibling temporary folder and moved into place at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from slimserve.errors import SlimserveError

# Files that mark a folder as one slimserve wrote, and so may replace. Anything else is the user's.
OUTPUT_MARKERS = ("slimserve.json", "compare.json", "build.json")


def _read_umask() -> int:
    """Read once at import: os.umask can only be read by setting it, which is not thread-safe later."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK


def check_output_path(target: Path, inputs: Sequence[Path] = ()) -> Path:
    """Refuse outputs that would destroy something: an input, or a folder slimserve did not write."""
    target = Path(target).absolute()
    for item in inputs:
        source = Path(item).absolute()
        if source == target or target in source.parents:
            raise SlimserveError(f"the output {target} would replace the input {source}",
                                 hint="choose an output folder outside the input")
    if target.exists() and not target.is_dir():
        raise SlimserveError(f"{target} exists and is not a folder", hint="choose another -o/--output path")
    if target.is_dir() and any(target.iterdir()) and not any((target / m).is_file() for m in OUTPUT_MARKERS):
        raise SlimserveError(f"{target} is a folder slimserve did not write; it will not be replaced",
                             hint="choose a new or empty output folder")
    return target


@contextlib.contextmanager
def atomic_dir(target: Path, *, overwrite: bool = True, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it replaces `target`, on failure it vanishes.

    The staging folder lives in the same parent so the final move is a rename on one filesystem. An
    existing `target` survives any failure untouched, and is replaced only if slimserve wrote it.
    """
    target = check_output_path(target, inputs)
    if target.exists() and not overwrite:
        raise SlimserveError(f"{target} already exists", hint="remove it or choose another output path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlimserveError(f"cannot create {target.parent}: {exc.strerror}") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    staging.chmod(DIR_MODE)  # mkdtemp makes 0700; outputs should look like any new folder
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def check_report_path(target: Path) -> Path:
    """Fail before slow work when a report file could not be written at the end."""
    target = Path(target).absolute()
    parent = next((p for p in (target.parent, *target.parent.parents) if p.exists()), Path("/"))
    if target.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SlimserveError(f"cannot write a report to {target}", hint="choose a writable file path")
    return target


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target).absolute()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise SlimserveError(f"cannot write {target}: {exc.strerror}", hint="choose a writable path") from None
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
