"""Nothing half-written: outputs are built in a sibling temporary folder and moved into place at the end.

Ownership: a folder counts as slimserve's own (and may be replaced by a later run) only if it holds
`OUTPUT_MARKER` with exactly `MARKER_TEXT`, which only `atomic_dir` writes. A user's folder that merely
contains a file named `slimserve.json` or `build.json` is not enough: replacing it would delete the
user's other files.

Staging: temporaries are named `.<out>.tmp-<pid>-<random>` (and `.<out>.old-<pid>-<random>` while a
previous output is swapped out), so a run killed with SIGKILL leaves something a later run can recognise
as stale (its process is gone) and remove. Temporaries of a live process are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from slimserve.errors import SlimserveError

OUTPUT_MARKER = ".slimserve-output"
MARKER_TEXT = "slimserve output folder: a later slimserve run may replace this whole folder\n"
_STAGING = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+\Z")


def _read_umask() -> int:
    """Read once at import: os.umask can only be read by setting it, which is not thread-safe later."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK


def is_slimserve_output(folder: Path) -> bool:
    """True if `folder` carries the marker only slimserve writes, with the content only slimserve writes."""
    marker = Path(folder) / OUTPUT_MARKER
    try:
        return marker.is_file() and not marker.is_symlink() and marker.read_text(encoding="utf-8") == MARKER_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def mark_output(folder: Path) -> None:
    """Claim `folder` as a slimserve output (done by `atomic_dir` just before the final move)."""
    (Path(folder) / OUTPUT_MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def check_output_path(target: Path, inputs: Sequence[Path] = ()) -> Path:
    """Refuse outputs that would destroy something: an input, or a folder slimserve did not write."""
    target = Path(target).absolute()
    for item in inputs:
        source = Path(item).absolute()
        if source == target or target in source.parents:
            raise SlimserveError(f"the output {target} would replace the input {source}",
                                 hint="choose an output folder outside the input")
    if target.is_symlink():
        raise SlimserveError(f"{target} is a symbolic link; slimserve will not replace it",
                             hint="choose another -o/--output path")
    if target.exists() and not target.is_dir():
        raise SlimserveError(f"{target} exists and is not a folder", hint="choose another -o/--output path")
    if target.is_dir() and _non_empty(target) and not is_slimserve_output(target):
        raise SlimserveError(f"{target} is a folder slimserve did not write; it will not be replaced",
                             hint=f"choose a new or empty output folder (slimserve replaces only folders "
                                  f"holding its {OUTPUT_MARKER} marker)")
    return target


def _non_empty(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError as exc:
        raise SlimserveError(f"cannot read {folder}: {exc.strerror}", hint="choose another output path") from None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_staging(parent: Path, name: str) -> list[Path]:
    """Remove temporaries that runs for `parent/name` left behind when they were killed; returns them."""
    removed: list[Path] = []
    try:
        candidates = sorted(parent.iterdir())
    except OSError:
        return removed
    for path in candidates:
        match = _STAGING.match(path.name)
        if match is None or match["name"] != name or _process_alive(int(match["pid"])):
            continue
        previous = path / "previous"
        target = parent / name
        if ".old-" in path.name and previous.is_dir() and not target.exists():
            # Killed between moving the previous output aside and moving the new one in: put it back.
            with contextlib.suppress(OSError):
                os.replace(previous, target)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed


def _staging_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


# Errors of the user's disk rather than of slimserve: reported as `error:` lines with exit 2 (README).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                         errno.EFBIG})


def disk_error(path: Path | str, exc: OSError) -> SlimserveError:
    """A failed write of the user's environment (read-only, full, no permission) as one clear line.

    `path` is what the user named (the output folder), not the staging file inside it that failed."""
    what = exc.strerror or type(exc).__name__
    hints = {errno.ENOSPC: "free some space or write to another disk",
             errno.EDQUOT: "free some space or write to another disk",
             errno.EROFS: "the filesystem is read-only: choose a writable output path",
             errno.EACCES: "choose a writable output path", errno.EPERM: "choose a writable output path"}
    hint = hints.get(exc.errno or 0, "check the path and the disk, then rerun")
    return SlimserveError(f"cannot write {path}: {what}", hint=hint)


def failed_path(exc: OSError) -> str:
    """The file an OSError is about; for copies the destination (shutil names the source first)."""
    return str(exc.filename2 or exc.filename or "a file")


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
        remove_stale_staging(target.parent, target.name)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "tmp"), dir=target.parent))
        staging.chmod(DIR_MODE)  # mkdtemp makes 0700; outputs should look like any new folder
    except OSError as exc:
        raise disk_error(target, exc) from None
    try:
        try:
            yield staging
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            raise disk_error(target, exc) from None
        try:
            mark_output(staging)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "old"), dir=target.parent))
                os.replace(target, old / "previous")
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except OSError as exc:
            raise disk_error(target, exc) from None
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
        remove_stale_staging(target.parent, target.name)
        fd, tmp = tempfile.mkstemp(prefix=_staging_prefix(target, "tmp"), dir=target.parent)
        os.close(fd)
        os.chmod(tmp, FILE_MODE)
    except OSError as exc:
        raise disk_error(target, exc) from None
    try:
        try:
            yield Path(tmp)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            raise disk_error(target, exc) from None
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise disk_error(target, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
