"""Hostile ONNX files, built in the tests: what a careless exporter or an attacker hands slimserve.

Each builder takes the path of the .onnx file to write and returns it. `optimize` (test_hostile_onnx.py)
and `package` (test_hardening_package.py) must refuse every one as bad input before any work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HOST_FILE = "/etc/passwd"
OUTSIDE = "../" * 30 + "etc/passwd"  # deep enough to reach / from any temporary folder

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])


def _save(path: Path, nodes: list[onnx.NodeProto], inits: list[TensorProto], domains: tuple[str, ...] = ()) -> Path:
    graph = helper.make_graph(nodes, "hostile", [X], [Y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                              + [helper.make_opsetid(d, 1) for d in domains])
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


def custom_op(path: Path) -> Path:
    return _save(path, [helper.make_node("Evil", ["x"], ["y"], domain="com.evil")], [], ("com.evil",))


def declared_40_gb(path: Path) -> Path:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[100_000, 100_000], raw_data=b"\0" * 16)
    return _save(path, [helper.make_node("Add", ["x", "w"], ["y"])], [tensor])


def constant_of_shape_bomb(path: Path) -> Path:
    shape = numpy_helper.from_array(np.array([100_000, 100_000, 100], np.int64), "s")
    return _save(path, [helper.make_node("ConstantOfShape", ["s"], ["c"]),
                        helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0),
                        helper.make_node("Add", ["x", "r"], ["y"])], [shape])


def external_outside(path: Path) -> Path:
    return _save(path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_external("w", OUTSIDE)])


def external_symlink(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "w.data").symlink_to(HOST_FILE)
    return _save(path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_external("w", "w.data")])


def external_in_subgraph(path: Path) -> Path:
    """External data hidden in an If branch: a walk over top-level initializers alone misses it."""
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["out"])], "then", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 4])],
                               [_external("w", OUTSIDE)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _save(path, [helper.make_node("If", ["cond"], ["w2"], then_branch=branch, else_branch=branch),
                        helper.make_node("MatMul", ["x", "w2"], ["y"])], [cond])


def external_absolute(path: Path) -> Path:
    return _save(path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_external("w", HOST_FILE)])


def dynamic_bomb(path: Path) -> Path:
    """The shape is computed from the input at run time, so no static screen can see it: the run fails."""
    scale = numpy_helper.from_array(np.array([10**7, 10**7], np.int64), "k")
    return _save(path, [helper.make_node("Shape", ["x"], ["sx"]), helper.make_node("Mul", ["sx", "k"], ["big"]),
                        helper.make_node("ConstantOfShape", ["big"], ["c"]),
                        helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0),
                        helper.make_node("Add", ["x", "r"], ["y"])], [scale])


def bomb_in_subgraph(path: Path) -> Path:
    """A ConstantOfShape bomb inside an If branch."""
    shape = numpy_helper.from_array(np.array([100_000, 100_000, 100], np.int64), "s")
    branch = helper.make_graph([helper.make_node("ConstantOfShape", ["s"], ["c"]),
                                helper.make_node("ReduceSum", ["c"], ["out"], keepdims=0)], "then", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])], [shape])
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _save(path, [helper.make_node("If", ["cond"], ["r"], then_branch=branch, else_branch=branch),
                        helper.make_node("Add", ["x", "r"], ["y"])], [cond])


def declared_40_gb_constant(path: Path) -> Path:
    """The 40 GB promise in a Constant node's attribute rather than an initializer."""
    tensor = TensorProto(name="wv", data_type=TensorProto.FLOAT, dims=[100_000, 100_000], raw_data=b"\0" * 16)
    return _save(path, [helper.make_node("Constant", [], ["w"], value=tensor),
                        helper.make_node("Add", ["x", "w"], ["y"])], [])
