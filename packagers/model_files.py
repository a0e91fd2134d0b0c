"""The model folder as it is deployed, shared by every target (Lambda zip, container image).

Deployed models keep their weights in an external data file beside `model.onnx`. ONNX Runtime
memory-maps external data instead of parsing and copying it out of the protobuf, which on MiniLM fp32
cut session load from ~190 ms to ~70 ms and peak RSS from 193 MB to 107 MB (python3.12, one thread,
medians of 4 fresh processes; `benchmarks/lambda_layer.py` measures it side by side). The weights, graph
and outputs are unchanged; only where the bytes live differs. Models that already use external data
(> 2 GB) are shipped as they are.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from slimserve.bundle import ModelBundle, contained_name
from slimserve.manifest import MANIFEST_NAME, DeployedModel, FileEntry, Manifest, parse_manifest
from slimserve.packagers.model_check import check_model

Source = Path | bytes
DATA_SUFFIX = ".data"
SIZE_THRESHOLD = 1024  # smaller tensors (shapes, scales) stay inline: mapping them costs more than it saves


def split_weights(model_path: Path) -> tuple[bytes, bytes]:
    """(graph bytes, weights bytes) with every initializer of ≥ 1 KiB moved to `<model>.data`."""
    import onnx

    from slimserve.errors import SlimserveError, first_line

    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # noqa: BLE001  # DecodeError, truncated external data (ValueError), OSError
        raise SlimserveError(f"cannot read {model_path} with its weights: {first_line(exc)}",
                             hint="rerun `slimserve optimize`; the model or its external data is damaged") from None
    with tempfile.TemporaryDirectory(prefix="slimserve-split-") as tmp:
        out = Path(tmp) / model_path.name
        onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=model_path.name + DATA_SUFFIX, size_threshold=SIZE_THRESHOLD)
        data_file = out.parent / (model_path.name + DATA_SUFFIX)
        return out.read_bytes(), data_file.read_bytes() if data_file.exists() else b""


def model_entries(bundle: ModelBundle) -> dict[str, Source]:
    """Relative name -> source for the deployed model folder, manifest included (always last written).

    Everything that ships passes here, so the model is checked here too (`check_model`; once per process,
    so the packagers' earlier call, made before the closure is built, costs nothing twice), and the manifest
    is the shipped one (`shipped_manifest`: no host path).
    """
    check_model(bundle)
    manifest = shipped_manifest(bundle.manifest)
    model_rel = bundle.model_path.relative_to(bundle.root).as_posix()
    # Checked again here, not only in load_bundle: a ModelBundle can be built by hand, and this is the gate.
    entries: dict[str, Source] = {rel: bundle.root / contained_name(bundle.root, rel, "the file to ship")
                                  for rel in bundle.files}
    if not manifest.model.external_data:
        graph, data = split_weights(bundle.model_path)
        if data:
            data_rel = model_rel + DATA_SUFFIX
            entries[model_rel] = graph
            entries[data_rel] = data
            # `bytes`/`sha256` describe the optimized model.onnx; `deployed` lists the files shipped for it.
            deployed = DeployedModel(
                layout="weights in external data, memory-mapped by onnxruntime at load",
                files=[FileEntry(path=name, bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
                       for name, blob in ((model_rel, graph), (data_rel, data))])
            model = manifest.model.model_copy(update={"external_data": [Path(data_rel).name], "deployed": deployed})
            manifest = manifest.model_copy(update={"model": model})
    entries[MANIFEST_NAME] = manifest.to_json().encode()
    return entries


# Manifest fields that name a file on the build machine (the source model, the --eval file).
_HOST_PATH_FIELDS = (("source", "path"), ("fidelity", "eval_source"))
_ABSOLUTE = re.compile(r"^(/|[A-Za-z]:[\\/]|\\\\)")


def shipped_manifest(manifest: Manifest) -> Manifest:
    """A bundle's manifest with no path of the build machine in it.

    The source is identified by its sha256 and basename (`source.path` keeps only the file or folder
    name); any other value that is an absolute path (a bare .onnx's folder, an --eval file) becomes its
    basename too. Packagers extend the result with in-image paths (/var/task, /opt/python): those are
    added after this and are the artifact's own, not the host's.
    """
    clean = manifest.to_dict()
    for section, key in _HOST_PATH_FIELDS:
        value = (clean.get(section) or {}).get(key) if isinstance(clean.get(section), dict) else None
        if isinstance(value, str) and ("/" in value or "\\" in value):  # a torch factory `mod:fn` has neither
            clean[section][key] = _basename(value)
    return parse_manifest(_scrub(clean), origin="the shipped manifest")


def _basename(value: str) -> str:
    return PureWindowsPath(value).name if "\\" in value else PurePosixPath(value.rstrip("/")).name


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and _ABSOLUTE.match(value):
        return _basename(value)
    return value
