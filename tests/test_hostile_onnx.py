"""Hostile ONNX files given to `optimize` are bad input: one `error:` line, exit 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import assert_clean_error, run_cli

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])


def _save(nodes: list[onnx.NodeProto], inits: list[TensorProto], path: Path, domains: tuple[str, ...] = ()) -> Path:
    graph = helper.make_graph(nodes, "hostile", [X], [Y], inits)
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.ones((4, 4), np.float32), name)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def external_outside(tmp_path: Path) -> Path:
    """Points at a host file through `..` (deep enough to reach / from any tmp folder)."""
    return _save([helper.make_node("MatMul", ["x", "w"], ["y"])],
                 [_external("w", "../" * 40 + "etc/passwd")], tmp_path / "m" / "model.onnx")


def external_symlink(tmp_path: Path) -> Path:
    """A data file beside the model that is a symlink to a host file."""
    os.makedirs(tmp_path / "m", exist_ok=True)
    (tmp_path / "m" / "w.data").symlink_to("/etc/passwd")
    return _save([helper.make_node("MatMul", ["x", "w"], ["y"])], [_external("w", "w.data")],
                 tmp_path / "m" / "model.onnx")


def external_absolute(tmp_path: Path) -> Path:
    return _save([helper.make_node("MatMul", ["x", "w"], ["y"])], [_external("w", "/etc/passwd")],
                 tmp_path / "m" / "model.onnx")


def custom_domain(tmp_path: Path) -> Path:
    return _save([helper.make_node("Evil", ["x"], ["y"], domain="com.evil")], [], tmp_path / "custom.onnx",
                 domains=("com.evil",))


def declared_40_gb(tmp_path: Path) -> Path:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[100_000, 100_000], raw_data=b"\0" * 16)
    return _save([helper.make_node("Add", ["x", "w"], ["y"])], [tensor], tmp_path / "big.onnx")


def constant_of_shape_bomb(tmp_path: Path) -> Path:
    shape = numpy_helper.from_array(np.array([100_000, 100_000, 100], np.int64), "s")
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"]),
             helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0), helper.make_node("Add", ["x", "r"], ["y"])]
    return _save(nodes, [shape], tmp_path / "bomb.onnx")


def dynamic_bomb(tmp_path: Path) -> Path:
    """The shape is computed from the input at run time, so no static screen can see it: the run fails."""
    scale = numpy_helper.from_array(np.array([10**7, 10**7], np.int64), "k")
    nodes = [helper.make_node("Shape", ["x"], ["sx"]), helper.make_node("Mul", ["sx", "k"], ["big"]),
             helper.make_node("ConstantOfShape", ["big"], ["c"]),
             helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0), helper.make_node("Add", ["x", "r"], ["y"])]
    return _save(nodes, [scale], tmp_path / "dyn.onnx")


@pytest.mark.parametrize(("build", "says"), [
    (external_outside, "outside its folder"),
    (external_symlink, "outside its folder"),
    (external_absolute, "outside its folder"),
    (custom_domain, "com.evil"),
    (declared_40_gb, "declares 40,000,000,000 bytes"),
    (constant_of_shape_bomb, "ConstantOfShape"),
    (dynamic_bomb, "failed on the evaluation inputs"),
])
def test_hostile_onnx_is_bad_input(tmp_path: Path, build: object, says: str) -> None:
    model = build(tmp_path)  # type: ignore[operator]
    out = tmp_path / "out"
    result = run_cli("optimize", str(model), "-o", str(out), "--recipe", "fp32")
    assert_clean_error(result, code=2, contains=says)
    assert "onnxruntime_src" not in result.stderr and "\x1b[1;31m" not in result.stderr  # no ORT log line
    assert "root:" not in result.stdout + result.stderr  # the host file's content is never echoed
    assert not out.exists()
