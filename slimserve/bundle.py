"""The value the later stages (check, package, compare) receive: an optimized model and its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError
from slimserve.manifest import MANIFEST_NAME, read_manifest, sha256_file


@dataclass(frozen=True)
class ModelBundle:
    """An optimize output folder (model.onnx, tokenizer files, slimserve.json), or a bare .onnx file.

    `files` lists every file a deployment must carry besides the manifest, relative to `root`.
    For a bare .onnx the manifest is synthesised in memory (a tensor model with no tokenizer).
    """

    root: Path
    model_path: Path
    manifest: dict[str, Any]
    files: tuple[str, ...]

    @property
    def is_text(self) -> bool:
        return bool(self.manifest["runtime"]["kind"] == "text")

    @property
    def task(self) -> str:
        return str(self.manifest["runtime"]["task"])


def load_bundle(path: Path) -> ModelBundle:
    path = Path(path)
    if not path.exists():
        raise SlimserveError(f"{path} does not exist", hint="pass an optimize output folder or a .onnx file")
    if path.is_file():
        return _bare_onnx_bundle(path)
    manifest = read_manifest(path)
    model_path = path / manifest["model"]["path"]
    if not model_path.is_file():
        raise SlimserveError(f"{path} has a manifest but its model {manifest['model']['path']} is missing")
    return ModelBundle(root=path, model_path=model_path, manifest=manifest, files=_listed_files(path, manifest))


def _listed_files(root: Path, manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files optimize wrote (its manifest lists them): a stray file in the folder is never deployed."""
    listed = manifest.get("files")
    if not isinstance(listed, list) or not listed:
        return tuple(sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                            if p.is_file() and p.name != MANIFEST_NAME))
    names = []
    for entry in listed:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or rel == MANIFEST_NAME:
            continue
        if not (root / rel).is_file():
            raise SlimserveError(f"{root} is incomplete: {rel}, listed in its {MANIFEST_NAME}, is missing",
                                 hint="rerun `slimserve optimize` to rebuild the folder")
        names.append(rel)
    # A deployed model folder keeps its weights beside model.onnx (see packagers/model_files.py).
    for data in manifest.get("model", {}).get("external_data") or []:
        rel = (Path(manifest["model"]["path"]).parent / data).as_posix()
        if rel not in names and (root / rel).is_file():
            names.append(rel)
    return tuple(sorted(names))


def _bare_onnx_bundle(path: Path) -> ModelBundle:
    from slimserve.optimizer.onnx_io import describe_model  # onnx is imported only when needed

    if path.suffix != ".onnx":
        raise SlimserveError(f"{path} is not a .onnx file or an optimize output folder")
    info = describe_model(path)
    manifest: dict[str, Any] = {
        "model": {"path": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                  "inputs": info["inputs"], "outputs": info["outputs"]},
        "runtime": {"kind": "tensor", "task": "tensor", "max_batch": 64},
        "source": {"kind": "onnx", "path": str(path.absolute())},
    }
    files = [path.name] + [f for f in info["external_data"]]
    return ModelBundle(root=path.parent, model_path=path, manifest=manifest, files=tuple(sorted(files)))
