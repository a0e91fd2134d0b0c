"""Source detection and its errors: every kind of model, every kind of bad input, without exporting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slimserve.errors import SlimserveError
from slimserve.optimizer.onnx_io import describe_model, load_onnx
from slimserve.optimizer.sources import (
    HfFolderSource,
    OnnxSource,
    TorchSource,
    infer_task,
    parse_shape,
    resolve_source,
)


def test_onnx_file_is_an_onnx_source(tiny_onnx: Path) -> None:
    source = resolve_source(str(tiny_onnx))
    assert isinstance(source, OnnxSource) and source.path == tiny_onnx
    info = describe_model(tiny_onnx)
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}]
    assert info["outputs"][0]["name"] == "y" and info["external_data"] == []


def test_sentence_transformers_folder_is_detected(minilm_dir: Path) -> None:
    source = resolve_source(str(minilm_dir))
    assert isinstance(source, HfFolderSource)
    assert (source.library, source.task) == ("sentence_transformers", "feature-extraction")


def test_packaged_hub_name_resolves_locally(minilm_dir: Path) -> None:
    source = resolve_source("sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(source, HfFolderSource) and source.path == minilm_dir


def test_factory_spec_with_shapes_is_a_torch_source() -> None:
    source = resolve_source("tiny_torch:tiny_net", input_shapes=("1x3x8x8",))
    assert isinstance(source, TorchSource)
    assert source.input_shapes == ((1, 3, 8, 8),) and source.input_dtype == "float32"


@pytest.mark.parametrize("config, library, task", [
    ({"architectures": ["BertForSequenceClassification"]}, "transformers", "text-classification"),
    ({"architectures": ["BertModel"]}, "transformers", "feature-extraction"),
    ({}, "sentence_transformers", "feature-extraction"),
])
def test_task_inference(config: dict[str, object], library: str, task: str) -> None:
    assert infer_task(config, library) == task


def _copy_config_only(minilm_dir: Path, dst: Path) -> Path:
    dst.mkdir()
    shutil.copy(minilm_dir / "config.json", dst / "config.json")
    return dst


@pytest.mark.parametrize("make, message", [
    (lambda d, m: d / "missing", "does not exist"),
    (lambda d, m: (d / "empty").mkdir() or d / "empty", "empty folder"),
    (lambda d, m: (d / "notes.txt").write_text("hi") and d / "notes.txt", "not an .onnx model"),
    (lambda d, m: _copy_config_only(m, d / "noweights"), "no model weights"),
])
def test_bad_sources_are_one_line_errors(tmp_path: Path, minilm_dir: Path, make, message: str) -> None:
    with pytest.raises(SlimserveError, match=message):
        resolve_source(str(make(tmp_path, minilm_dir)))


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path: Path, minilm_dir: Path) -> None:
    folder = _copy_config_only(minilm_dir, tmp_path / "pickled")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(SlimserveError, match="pickle") as info:
        resolve_source(str(folder))
    assert "--allow-pickle" in (info.value.hint or "")
    assert isinstance(resolve_source(str(folder), allow_pickle=True), HfFolderSource)


def test_remote_code_is_refused_unless_trusted(tmp_path: Path, minilm_dir: Path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(minilm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SlimserveError, match="auto_map"):
        resolve_source(str(folder))
    assert resolve_source(str(folder), trust_remote_code=True).trust_remote_code  # type: ignore[union-attr]


def test_unknown_task_and_bad_shapes(minilm_dir: Path) -> None:
    with pytest.raises(SlimserveError, match="unknown task"):
        resolve_source(str(minilm_dir), task="image-segmentation")
    with pytest.raises(SlimserveError, match="no --input-shape"):
        resolve_source("tiny_torch:tiny_net")
    for bad in ("1x3xAx4", "0x3", ""):
        with pytest.raises(SlimserveError):
            parse_shape(bad)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"this is not a protobuf at all, just text\n" * 10, "not"),
])
def test_unreadable_onnx_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(SlimserveError, match=message):
        load_onnx(path)


def test_truncated_onnx_file(tiny_onnx: Path) -> None:
    data = tiny_onnx.read_bytes()
    tiny_onnx.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlimserveError, match="not a valid ONNX file|not a usable ONNX model"):
        load_onnx(tiny_onnx)


def test_missing_external_data_is_named(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    assert describe_model(tmp_path / "m.onnx")["external_data"] == ["m.data"]
    (tmp_path / "m.data").unlink()
    with pytest.raises(SlimserveError, match="m.data"):
        describe_model(tmp_path / "m.onnx")


def test_truncated_safetensors_is_a_clear_error(tmp_path: Path, minilm_dir: Path) -> None:
    from tests.conftest import assert_clean_error, run_cli

    folder = tmp_path / "damaged"
    shutil.copytree(minilm_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--recipe", "fp32")
    assert_clean_error(result, contains="weights")
    assert not (tmp_path / "out").exists()
