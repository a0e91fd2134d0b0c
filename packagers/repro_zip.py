"""Same input, same bytes: a zip writer with sorted entries, one timestamp and normalised modes.

Entries are `arcname -> Path | bytes`. Folders are written as explicit entries (every parent of every
file), which some unzip tools and Lambda's extractor expect. Timestamps come from SOURCE_DATE_EPOCH,
clamped to 1980-01-01 (the earliest a zip can hold), default 1980-01-01. Modes are 0644, or 0755 for
folders and executables; no uid/gid or host names are stored (zip keeps none with ZipInfo defaults and
create_system fixed to Unix).
"""

from __future__ import annotations

import stat
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from slimserve.errors import SlimserveError
from slimserve.packagers.reproducible import (  # noqa: F401  (re-exported)
    COMPRESS_LEVEL,
    ZIP_EPOCH_MIN,
    Source,
    is_executable,
    source_date_epoch,
    tree_entries,
)

_CHUNK = 1 << 20


def _date_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(epoch)
    return (min(t.tm_year, 2107), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _check_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or name.endswith("/"):
        raise SlimserveError(f"invalid archive entry name {name!r}")
    return path.as_posix()


def write_zip(out: Path, entries: Mapping[str, Source], executables: frozenset[str] = frozenset(),
              epoch: int | None = None) -> int:
    """Write `entries` to `out` reproducibly; returns the total uncompressed bytes of the files.

    A file is 0755 when its arcname is in `executables` or its name says it is (see reproducible.py), else 0644.
    """
    names = {_check_name(n): src for n, src in entries.items()}
    dirs: set[str] = set()
    for name in names:
        parts = name.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    clash = dirs & set(names)
    if clash:
        raise SlimserveError(f"archive entry {min(clash)!r} is both a file and a folder")
    date_time = _date_time(source_date_epoch() if epoch is None else max(epoch, ZIP_EPOCH_MIN))
    total = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as zf:
        for name in sorted(set(names) | {d + "/" for d in dirs}):  # "a/" sorts before "a/b": parents first
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.create_system = 3  # Unix, so external_attr carries the mode
            if name.endswith("/"):
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, b"")
                continue
            src = names[name]
            executable = name in executables or is_executable(name)
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]  # read by ZipFile.open(info, "w")
            if isinstance(src, bytes):
                zf.writestr(info, src, compress_type=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
                total += len(src)
            else:
                with open(src, "rb") as fh, zf.open(info, "w", force_zip64=src.stat().st_size > 0x7FFF0000) as dst:
                    while block := fh.read(_CHUNK):
                        dst.write(block)
                        total += len(block)
    return total
