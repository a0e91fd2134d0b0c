"""Same input, same bytes: the rules every archive slimserve writes (zip or image layer) follows.

One timestamp (SOURCE_DATE_EPOCH, else 1980-01-01), modes decided by file name rather than by the build
host's permission bits (0755 for folders, shared libraries and scripts, 0644 for everything else), a
fixed compression level, and entries collected in a stable order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from slimserve.errors import SlimserveError

ZIP_EPOCH_MIN = 315532800  # 1980-01-01T00:00:00Z: the earliest time a zip can hold, and the default for all
COMPRESS_LEVEL = 6  # zlib's default: level 9 costs seconds on model files for < 1% smaller archives
EXECUTABLE_SUFFIXES = (".so", ".sh")

Source = Path | bytes


def source_date_epoch(environ: Mapping[str, str] | None = None, minimum: int = ZIP_EPOCH_MIN) -> int:
    """SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/), clamped to `minimum`."""
    raw = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return ZIP_EPOCH_MIN
    try:
        return max(int(raw), minimum)
    except ValueError:
        raise SlimserveError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer number of seconds") from None


def is_executable(name: str) -> bool:
    """By name only, so the same inputs give the same modes on every machine (a chmod does not leak in)."""
    base = name.rsplit("/", 1)[-1]
    return base.endswith(EXECUTABLE_SUFFIXES) or ".so." in base or "/bin/" in f"/{name}"


def tree_entries(root: Path, prefix: str = "") -> dict[str, Path]:
    """Every file under `root` (symlinks followed) as `prefix/relative/path -> Path`, in sorted order."""
    out: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            out[f"{prefix.rstrip('/')}/{rel}" if prefix else rel] = path
    return out


def write_tree(entries: Mapping[str, Path | bytes], root: Path) -> Path:
    """The inverse of `tree_entries`: each `relative/path -> file or bytes` written under `root` (created),
    as an artifact would unpack, so it can be run or measured in place. Returns `root`."""
    for name, source in entries.items():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(source if isinstance(source, bytes) else Path(source).read_bytes())
    return root
