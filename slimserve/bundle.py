"""The value the later stages (check, package, compare) receive: an optimized model and its manifest.

Only what the user asked ships: every file a bundle names (the manifest's `files`, its model and external
data, or the folder's files when the manifest lists none, or the external data a bare .onnx refers to) is
checked here, when the bundle is loaded and before any wheel is downloaded or archive built. A name must
be relative, without `..`, and resolve (symlinks followed) to a regular file inside the model folder.
A symlink that resolves inside the folder is accepted and read as the file it points to (optimize copies
files, but a user may deduplicate a folder with links); one that leaves the folder is refused, whatever
it points to.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from slimserve.errors import SlimserveError
from slimserve.manifest import MANIFEST_NAME, Manifest, parse_manifest, read_manifest, sha256_file

_HINT = "a model folder may only name regular files inside itself; copy the file into the folder (cp -L)"


@dataclass(frozen=True)
class ModelBundle:
    """An optimize output folder (model.onnx, tokenizer files, slimserve.json), or a bare .onnx file.

    `files` lists every file a deployment must carry besides the manifest, relative to `root`; each was
    checked to be a regular file inside `root` (see the module docstring).
    For a bare .onnx the manifest is synthesised in memory (a tensor model with no tokenizer).
    """

    root: Path
    model_path: Path
    manifest: Manifest
    files: tuple[str, ...]

    @property
    def is_text(self) -> bool:
        return self.manifest.runtime.kind == "text"

    @property
    def runtime_extra(self) -> str:
        """The runtime closure's requirements extra: "text" (tokenizers), "image" (Pillow) or "" (tensors)."""
        kind = self.manifest.runtime.kind
        return kind if kind in ("text", "image") else ""

    @property
    def task(self) -> str:
        return self.manifest.runtime.task


def load_bundle(path: Path) -> ModelBundle:
    path = Path(path)
    if not path.exists():
        raise SlimserveError(f"{path} does not exist", hint="pass an optimize output folder or a .onnx file")
    if path.is_file():
        return _bare_onnx_bundle(path)
    manifest = read_manifest(path)  # validated: model.path is a string
    model_rel = contained_name(path, manifest.model.path, "its model")
    model_path = path / model_rel
    if not model_path.is_file():
        raise SlimserveError(f"{path} has a manifest but its model {model_rel} is missing")
    files = set(_listed_files(path, manifest)) | {model_rel}
    files |= set(_referenced_data(path, model_rel))
    return ModelBundle(root=path, model_path=model_path, manifest=manifest, files=tuple(sorted(files)))


def contained_name(root: Path, name: str, what: str) -> str:
    """`name` normalised (posix, relative) once it is proven to be a regular file inside `root`.

    One line, naming the folder and the offending entry, when it is absolute, climbs with `..`, resolves
    outside `root` (a symlink to /etc/passwd), or is not a regular file (a folder, a fifo, a device).
    """
    pure = PurePosixPath(name)
    if not name or "\\" in name or pure.is_absolute() or ".." in pure.parts or _has_drive(name):
        raise SlimserveError(f"{root}: {what} {name!r} is not a plain relative path inside the folder", hint=_HINT)
    rel = pure.as_posix()
    real_root = root.resolve()
    try:
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a dangling or looping symlink: the caller says what is missing
        return rel
    if not real.is_relative_to(real_root):
        raise SlimserveError(f"{root}: {what} {rel!r} resolves outside the model folder", hint=_HINT)
    if not stat.S_ISREG(real.stat().st_mode):
        raise SlimserveError(f"{root}: {what} {rel!r} is not a regular file", hint=_HINT)
    return rel


def _has_drive(name: str) -> bool:
    """`C:\\x` or `C:/x`: absolute on Windows, where a manifest may have been written."""
    return len(name) > 1 and name[1] == ":" and name[0].isalpha()


def _listed_files(root: Path, manifest: Manifest) -> tuple[str, ...]:
    """The files optimize wrote (its manifest lists them): a stray file in the folder is never deployed."""
    if not manifest.files:
        return _folder_files(root)
    names = []
    for entry in manifest.files:
        if entry.path == MANIFEST_NAME:
            continue
        rel = contained_name(root, entry.path, f"the file listed in {MANIFEST_NAME}")
        if not (root / rel).is_file():
            raise SlimserveError(f"{root} is incomplete: {rel}, listed in its {MANIFEST_NAME}, is missing",
                                 hint="rerun `slimserve optimize` to rebuild the folder")
        names.append(rel)
    # A deployed model folder keeps its weights beside model.onnx (see packagers/model_files.py).
    model_dir = PurePosixPath(manifest.model.path).parent
    for data in manifest.model.external_data:
        rel = contained_name(root, (model_dir / data).as_posix() if not data.startswith("/") else data,
                             "the external data file")
        if rel not in names and (root / rel).is_file():
            names.append(rel)
    return tuple(sorted(names))


def _folder_files(root: Path) -> tuple[str, ...]:
    """Every file in the folder but the manifest (no `files` list), symlinks checked like listed names.

    Symlinked folders are not entered: one that leaves the folder is refused, one that stays inside only
    repeats files already found at their real place.
    """
    names = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                dirs.remove(name)
                if not (here / name).resolve().is_relative_to(root.resolve()):
                    rel = (here / name).relative_to(root).as_posix()
                    raise SlimserveError(f"{root}: the folder {rel!r} resolves outside the model folder", hint=_HINT)
        for name in files:
            rel = (here / name).relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                names.append(contained_name(root, rel, "the file"))
    return tuple(sorted(names))


def _referenced_data(root: Path, model_rel: str) -> list[str]:
    """External data files model.onnx itself points to, each checked to lie inside the folder.

    A manifest can be edited, but onnx and onnxruntime follow the locations written in the model: those
    are what would be read (and inlined into the shipped weights) at packaging time.
    """
    model_dir = PurePosixPath(model_rel).parent
    names = []
    for location in external_locations(root / model_rel):
        if PurePosixPath(location).is_absolute() or _has_drive(location):
            rel = location
        else:
            rel = (model_dir / location).as_posix()
        rel = contained_name(root, rel, f"external data of {model_rel}")
        if not (root / rel).is_file():
            raise SlimserveError(f"{root / model_rel} refers to external data {location!r} that is not beside it",
                                 hint="copy the .onnx file together with its external data files")
        names.append(rel)
    return names


def model_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse ones, and tensor attributes (Constant values),
    in the main graph and in every subgraph (If/Loop/Scan bodies), where external data can hide too."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def external_locations(model_path: Path) -> list[str]:
    """The `location` of every tensor stored as external data, as written in the model (not resolved)."""
    from slimserve.optimizer.onnx_io import load_onnx  # onnx is imported only when needed

    model = load_onnx(model_path, with_data=False)
    found = {entry.value for tensor in model_tensors(model) for entry in tensor.external_data
             if entry.key == "location"}
    return sorted(found)


def _bare_onnx_bundle(path: Path) -> ModelBundle:
    from slimserve.optimizer.onnx_io import describe_model  # onnx is imported only when needed

    if path.suffix != ".onnx":
        raise SlimserveError(f"{path} is not a .onnx file or an optimize output folder")
    files = [path.name] + _referenced_data(path.parent, path.name)
    info = describe_model(path)
    manifest = parse_manifest({
        "model": {"path": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                  "inputs": info["inputs"], "outputs": info["outputs"]},
        "runtime": {"kind": "tensor", "task": "tensor", "max_batch": 64},
        # A basename and the hash: the build machine's folder layout is nobody's business downstream.
        "source": {"kind": "onnx", "path": path.name, "sha256": sha256_file(path)},
    }, origin=str(path))
    return ModelBundle(root=path.parent, model_path=path, manifest=manifest, files=tuple(sorted(set(files))))
