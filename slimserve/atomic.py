"""Nothing half-written: outputs are built in a sibling temporary folder and moved into place at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slimserve.errors import SlimserveError


def _default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextlib.contextmanager
def atomic_dir(target: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it replaces `target`, on failure it vanishes.

    The staging folder lives in the same parent so the final move is a rename on one filesystem. An
    existing `target` survives any failure untouched.
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise SlimserveError(f"{target} exists and is not a folder", hint="choose another -o/--output path")
    if target.exists() and not overwrite:
        raise SlimserveError(f"{target} already exists", hint="remove it or choose another output path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlimserveError(f"cannot create {target.parent}: {exc.strerror}") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    staging.chmod(_default_dir_mode())  # mkdtemp makes 0700; outputs should look like any new folder
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


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & _default_dir_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
