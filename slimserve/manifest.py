"""`slimserve.json`: the manifest that travels with every artifact (source, recipe, versions, measurements).

Stages add sections to the manifest; none rewrites another's section. CI can diff two builds by it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slimserve import __version__
from slimserve.errors import SlimserveError

MANIFEST_NAME = "slimserve.json"
SCHEMA_VERSION = 1

TRACKED_LIBRARIES = ("onnx", "onnxruntime", "numpy", "tokenizers", "torch", "transformers", "optimum",
                     "optimum-onnx", "sentence-transformers")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(paths: Iterable[Path], root: Path) -> str:
    """One digest for a set of files, stable across machines: relative names and contents, sorted."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the result (absent ones are left out)."""
    versions = {"slimserve": __version__, "python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def file_entries(root: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        entries.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return entries


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an optimize (or package) output folder, with a clear error when it is not one."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise SlimserveError(
            f"{folder} has no {MANIFEST_NAME}: it is not a slimserve output folder",
            hint="run `slimserve optimize MODEL -o OUT` first and pass OUT",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlimserveError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or "model" not in data or "runtime" not in data:
        raise SlimserveError(f"{path} is not a slimserve manifest (no 'model'/'runtime' sections)")
    return data
