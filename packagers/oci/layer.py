"""Reproducible gzip tar layers from `{path in image: source}` entries.

Same input, same bytes: entries sorted, every parent directory present as its own entry (Lambda rejects
layers without them), uid/gid 0 with empty owner names, one mtime (SOURCE_DATE_EPOCH, else 1980-01-01),
modes 0755 for directories and executables and 0644 otherwise (host modes never leak in), PAX format,
gzip header with no name and mtime 0, a fixed compression level.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from slimserve.errors import SlimserveError
from slimserve.packagers.reproducible import COMPRESS_LEVEL, ZIP_EPOCH_MIN, Source, is_executable
from slimserve.packagers.reproducible import source_date_epoch as _source_date_epoch
from slimserve.packagers.reproducible import tree_entries as _tree_entries

from .digest import Digest
from .image import OCI_LAYER_GZIP, Layer

DEFAULT_EPOCH = ZIP_EPOCH_MIN


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int:
    """Tar can hold any time since 1970, so unlike zips no 1980 clamp (the default is still 1980)."""
    return int(_source_date_epoch(environ, minimum=0))


def image_path(path: str) -> str:
    """Normalise a path in the image to `a/b/c` (no leading slash, no `.`/`..` components)."""
    parts = [p for p in PurePosixPath("/" + path).parts[1:] if p not in ("", ".")]
    if not parts or ".." in parts:
        raise SlimserveError(f"invalid path in image: {path!r}")
    return "/".join(parts)


def tree_entries(folder: Path, prefix: str) -> dict[str, Path]:
    """Every file under `folder` (symlinks followed) mapped below `prefix`. Nothing is filtered: a runtime
    closure may ship sourceless or unchecked-hash bytecode on purpose."""
    return {image_path(name): src for name, src in _tree_entries(folder, prefix).items()}


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what the tar writer produces before gzip sees it (diff_id and uncompressed size)."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.count += len(data)
        self.sink.write(data)
        return len(data)


def _info(name: str, *, directory: bool, size: int, executable: bool, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory or executable else 0o644
    info.size = 0 if directory else size
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_layer(
    entries: Mapping[str, Source],
    out: Path,
    *,
    epoch: int | None = None,
    media_type: str = OCI_LAYER_GZIP,
    compresslevel: int = COMPRESS_LEVEL,
) -> Layer:
    """Write a gzip tar layer to `out` holding `entries` (path in image -> file or bytes) and describe it."""
    epoch = source_date_epoch() if epoch is None else epoch
    files = {image_path(k): v for k, v in entries.items()}
    dirs: set[str] = set()
    for name in files:
        parts = name.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = dirs & files.keys()
    if clash:
        raise SlimserveError(f"layer entry {min(clash)!r} is both a file and a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel) as gz:
        counter = _HashingWriter(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=counter, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(dirs | files.keys()):
                if name in dirs:
                    tar.addfile(_info(name, directory=True, size=0, executable=True, epoch=epoch))
                    continue
                src = files[name]
                if isinstance(src, bytes):
                    tar.addfile(_info(name, directory=False, size=len(src), executable=False, epoch=epoch),
                                io.BytesIO(src))
                    continue
                try:
                    st = os.stat(src)
                    with open(src, "rb") as fh:
                        executable = is_executable(name)
                        tar.addfile(_info(name, directory=False, size=st.st_size, executable=executable,
                                          epoch=epoch), fh)
                except OSError as exc:
                    raise SlimserveError(f"cannot read {src} for the image: {exc.strerror}") from None
    return Layer(
        digest=Digest.of_file(out),
        diff_id=Digest("sha256", counter.sha.hexdigest()),
        size=out.stat().st_size,
        media_type=media_type,
        path=out,
        uncompressed_size=counter.count,
    )


def layer_from_blob(path: Path, media_type: str, digest: Digest | None = None) -> Layer:
    """Describe an existing gzip layer blob: reads it once to compute its diff_id and uncompressed size."""
    sha = hashlib.sha256()
    count = 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                sha.update(block)
                count += len(block)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SlimserveError(f"layer blob {path.name} is not a readable gzip stream: {exc}") from None
    return Layer(
        digest=digest or Digest.of_file(path),
        diff_id=Digest("sha256", sha.hexdigest()),
        size=path.stat().st_size,
        media_type=media_type,
        path=path,
        uncompressed_size=count,
    )
