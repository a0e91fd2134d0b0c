"""slimserve.json through its one typed model: what optimize writes round-trips unchanged, a newer schema
and a broken section are one clear line, and every package target writes the same `package` section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimserve.bundle import load_bundle
from slimserve.errors import SlimserveError
from slimserve.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    PackageSection,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from tests.helpers_lambda import tensor_model_dir


def _optimize_like() -> dict[str, Any]:
    """The shape optimize writes, with a family key and a step option the model does not name."""
    return {
        "schema": SCHEMA_VERSION,
        "source": {"kind": "hf", "path": "minilm", "sha256": "ab" * 32, "task": "feature-extraction"},
        "recipe": "int8",
        "steps": [{"step": "int8", "options": {"per_channel": True}, "seconds": 1.5, "bytes": 10, "notes": []}],
        "versions": {"slimserve": "0", "onnx": "1.17.0"},
        "model": {"path": "model.onnx", "bytes": 10, "sha256": "cd" * 32, "external_data": [], "fp32_bytes": 40,
                  "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
                  "outputs": [{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", 384]}],
                  "opset": 17},
        "runtime": {"kind": "text", "task": "feature-extraction", "tokenizer": "tokenizer.json", "max_length": 256,
                    "pooling": "mean", "max_tokens": 8192},
        "fidelity": {"metric": "cosine", "output": "sentence_embedding", "mean": 0.999, "min": 1, "samples": 64},
        "timings": {"export_s": 1.0, "recipe_s": 0.5},
        "notes": ["a note"],
        "files": [{"path": "model.onnx", "bytes": 10, "sha256": "cd" * 32}],
    }


def test_what_optimize_writes_round_trips_unchanged(tmp_path: Path) -> None:
    data = _optimize_like()
    write_manifest(tmp_path, data)
    text = (tmp_path / MANIFEST_NAME).read_text()
    assert json.loads(text) == data and '"min": 1,' in text  # every key kept, unknown ones too; ints stay ints
    assert list(json.loads(text)) == list(data)  # sections in the order optimize wrote them
    manifest = read_manifest(tmp_path)
    assert manifest.runtime.kind == "text" and manifest.runtime.spec()["pooling"] == "mean"
    assert manifest.model.inputs[0].shape == ["batch", "sequence"] and manifest.fidelity is not None
    assert manifest.to_json() == text


def test_a_manifest_from_a_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({**_optimize_like(), "schema": SCHEMA_VERSION + 1}))
    with pytest.raises(SlimserveError, match=f"newer slimserve \\(manifest schema {SCHEMA_VERSION + 1}") as info:
        read_manifest(tmp_path)
    assert "upgrade" in str(info.value.hint)


@pytest.mark.parametrize(("change", "message"), [
    ({"model": {"bytes": 3}}, "model.path: Field required"),
    ({"runtime": {"kind": "text", "task": 3}}, "runtime.task"),
    ({"files": [{"bytes": 3}]}, "files.0.path"),
    ({"schema": "two"}, "is not a manifest schema version"),
])
def test_a_broken_section_is_one_line_naming_it(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({**_optimize_like(), **change}))
    with pytest.raises(SlimserveError, match=message):
        read_manifest(tmp_path)


def test_write_manifest_refuses_a_dict_that_is_not_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(SlimserveError, match="no 'model'/'runtime'"):
        write_manifest(tmp_path, {"model": {"path": "m.onnx"}})
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_the_package_section_is_closed_and_shared_by_every_target() -> None:
    common = {"platform": "p", "python": "3.12", "arch": "x86_64", "artifacts": [{"path": "a", "bytes": 1, "sha256": "0"}]}
    for target in ("lambda", "container"):
        assert PackageSection.model_validate({"target": target, **common}).target == target
    with pytest.raises(ValueError, match="memroy_mb"):
        PackageSection.model_validate({"target": "lambda", **common, "memroy_mb": 1})
    with pytest.raises(ValueError):
        PackageSection.model_validate({"target": "zip", **common})


def test_bundles_carry_the_typed_manifest(tmp_path: Path) -> None:
    bundle = load_bundle(tensor_model_dir(tmp_path / "m"))
    assert isinstance(bundle.manifest, Manifest) and bundle.manifest.runtime.kind == "tensor"
    assert bundle.manifest.to_dict()["runtime"]["kind"] == "tensor"  # plain JSON, as the shipped runtime reads it
    bare = load_bundle(tmp_path / "m" / "model.onnx")
    assert bare.manifest.runtime.spec() == {"kind": "tensor", "task": "tensor", "max_batch": 64}
    assert bare.manifest.schema_version is None and parse_manifest(bare.manifest) is bare.manifest
