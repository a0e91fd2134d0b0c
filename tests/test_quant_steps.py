"""Quantization steps on tiny graphs built with onnx.helper: valid output, expected ops, close outputs.

No mocks, no MiniLM (the lead's end-to-end tests cover the real model). Each model is a few KB so the
whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimserve.errors import SlimserveError, ToolError
from slimserve.optimizer import nbits
from slimserve.optimizer.steps import (
    fp16,
    graph_opt,
    int4_weight,
    int8_auto,
    int8_dynamic,
    int8_static,
    int8_weight,
)
from slimserve.optimizer.steps.base import StepContext, StepSpec

RNG = np.random.default_rng(0)
VOCAB, DIM, HIDDEN = 1024, 64, 256


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def encoder_model(path: Path) -> Path:
    """ids -> Gather(table) -> MatMul+Add -> Erf-GELU -> MatMul -> ReduceMean: an encoder in miniature."""
    inits = [
        numpy_helper.from_array(_w(VOCAB, DIM), "emb"),
        numpy_helper.from_array(_w(DIM, HIDDEN), "w1"),
        numpy_helper.from_array(np.zeros(HIDDEN, np.float32) + 0.1, "b1"),
        numpy_helper.from_array(_w(HIDDEN, DIM), "w2"),
        numpy_helper.from_array(np.array([1 / np.sqrt(2)], np.float32), "rsqrt2"),
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
        numpy_helper.from_array(np.array([0.5], np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed", axis=0),
        helper.make_node("MatMul", ["e", "w1"], ["h0"], name="up"),
        helper.make_node("Add", ["h0", "b1"], ["h"], name="up_bias"),
        helper.make_node("Mul", ["h", "rsqrt2"], ["hs"], name="gelu_scale"),
        helper.make_node("Erf", ["hs"], ["he"], name="gelu_erf"),
        helper.make_node("Add", ["he", "one"], ["he1"], name="gelu_add"),
        helper.make_node("Mul", ["h", "he1"], ["hm"], name="gelu_mul"),
        helper.make_node("Mul", ["hm", "half"], ["g"], name="gelu_half"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="down"),
        helper.make_node("ReduceMean", ["y"], ["out"], name="pool", axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", DIM])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def convnet_model(path: Path) -> Path:
    """Two convs whose weights arrive through a Constant node, a Transpose of an initializer and a
    graph input that shadows an initializer (old exporters' keep_initializers_as_inputs)."""
    w1 = (RNG.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    w2 = (RNG.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32)
    fc = _w(32, 64)
    nodes = [
        helper.make_node("Constant", [], ["w1"], name="w1_const", value=numpy_helper.from_array(w1, "w1v")),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Identity", ["w2_raw"], ["w2"], name="w2_identity"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Transpose", ["fc_t"], ["fc"], name="fc_transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["f", "fc"], ["out"], name="fc_matmul"),
    ]
    inits = [
        numpy_helper.from_array(np.zeros(32, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2_raw"),
        numpy_helper.from_array(np.ascontiguousarray(fc.T), "fc_t"),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, 8, 8]),
            helper.make_tensor_value_info("w2_raw", TensorProto.FLOAT, [32, 32, 3, 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 64])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def control_flow_model(path: Path) -> Path:
    """A MatMul in the main graph, then an If whose branches each hold a MatMul on a captured weight."""
    w, wa, wb = _w(DIM, DIM), _w(DIM, DIM), _w(DIM, DIM)

    def branch(name: str, weight: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["h", weight], [f"{name}_out"], name=f"{name}_mm")],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
        )

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="main_mm"),
        helper.make_node("ReduceSum", ["h"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node(
            "If",
            ["cond"],
            ["out"],
            name="branch",
            then_branch=branch("then", "wa"),
            else_branch=branch("else", "wb"),
        ),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (wa, "wa"), (wb, "wb"))]
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    graph = helper.make_graph(
        nodes,
        "control_flow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, DIM])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, DIM])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def lstm_model(path: Path) -> Path:
    """A single LSTM layer followed by a MatMul projection."""
    hidden, inp = 32, 16
    w = (RNG.standard_normal((1, 4 * hidden, inp)) * 0.2).astype(np.float32)
    r = (RNG.standard_normal((1, 4 * hidden, hidden)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R"], ["y", "", ""], name="lstm", hidden_size=hidden),
        helper.make_node("Squeeze", ["y", "axis1"], ["ys"], name="squeeze"),
        helper.make_node("MatMul", ["ys", "proj"], ["out"], name="proj_mm"),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(r, "R"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(_w(hidden, 128), "proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, inp])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [5, 2, 128])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def _feeds(kind: str, n: int = 4) -> list[dict[str, np.ndarray]]:
    if kind == "encoder":
        return [{"ids": RNG.integers(0, VOCAB, (1, 7 + i), dtype=np.int64)} for i in range(n)]
    if kind == "convnet":
        return [{"x": RNG.standard_normal((1, 16, 8, 8)).astype(np.float32)} for _ in range(n)]
    if kind == "lstm":
        return [{"x": RNG.standard_normal((5, 2, 16)).astype(np.float32)} for _ in range(n)]
    return [{"x": RNG.standard_normal((4, DIM)).astype(np.float32)} for _ in range(n)]


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "encoder": encoder_model,
    "convnet": convnet_model,
    "control": control_flow_model,
    "lstm": lstm_model,
}


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds]


def _rel_err(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    x, y = np.concatenate([v.ravel() for v in a]), np.concatenate([v.ravel() for v in b])
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _init_types(path: Path) -> set[int]:
    return {t.data_type for t in onnx.load(str(path)).graph.initializer}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _apply(spec: StepSpec, kind: str, tmp_path: Path, calibrate: bool = True) -> tuple[Path, Path, float]:
    """Build `kind`, run the step, check the output is valid, loads, and leaves src untouched."""
    src = BUILDERS[kind](tmp_path / f"{kind}.onnx")
    before = _sha(src)
    dst = tmp_path / "out" / "model.onnx"
    work = tmp_path / "work"
    work.mkdir()
    feeds = _feeds(kind)
    result = spec.run(src, dst, StepContext(work_dir=work, calibration=feeds if calibrate else ()), spec.options())
    assert result.path == dst and dst.exists()
    assert _sha(src) == before, "the step changed its input file"
    onnx.checker.check_model(str(dst))
    err = _rel_err(_run(dst, feeds), _run(src, feeds))
    return src, dst, err


STEPS = [
    graph_opt.SPEC,
    fp16.SPEC,
    int8_dynamic.SPEC,
    int8_static.SPEC,
    int8_weight.SPEC,
    int4_weight.SPEC,
    int8_auto.SPEC,
]
TOLERANCE = {
    "fp32": 1e-5,
    "fp16": 0.01,
    "int8-dynamic": 0.05,
    "int8-static": 0.08,
    "int8-weight": 0.02,
    "int4-weight": 0.2,
    "int8": 0.02,
}


@pytest.mark.parametrize("spec", STEPS, ids=lambda s: s.name)
def test_encoder_every_step(spec: StepSpec, tmp_path: Path) -> None:
    _, _dst, err = _apply(spec, "encoder", tmp_path)
    assert err < TOLERANCE[spec.name], f"{spec.name}: relative error {err:.4f}"


def test_int8_weight_stores_int8_tables_and_weights(tmp_path: Path) -> None:
    _, dst, _ = _apply(int8_weight.SPEC, "encoder", tmp_path)
    model = onnx.load(str(dst))
    int8 = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT8}
    assert any(n.startswith("emb") for n in int8) and any(n.startswith("w1") for n in int8)
    assert not any(t.name in ("emb", "w1", "w2") for t in model.graph.initializer), (
        "float weights left behind"
    )
    assert dst.stat().st_size < 0.4 * (VOCAB * DIM + 2 * DIM * HIDDEN) * 4


def test_int4_uses_matmul_nbits(tmp_path: Path) -> None:
    _, dst, _ = _apply(int4_weight.SPEC, "encoder", tmp_path)
    nbits = [n for n in onnx.load(str(dst)).graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(helper.get_node_attr_value(n, "bits") == 4 for n in nbits)


def test_int4_embeddings_gather_block_quantized(tmp_path: Path) -> None:
    """A vocabulary-sized table becomes GatherBlockQuantized and looks up the same rows."""
    model = onnx.load(str(encoder_model(tmp_path / "e.onnx")))
    table = _w(VOCAB, DIM)
    opts = int4_weight.Int4Options()
    assert nbits.replace_gathers_4bit(model, 32, opts.symmetric, True) == []  # below the vocabulary threshold
    big = _w(8192, DIM)
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "emb"))
    model.graph.initializer.append(numpy_helper.from_array(big, "emb"))
    assert nbits.replace_gathers_4bit(model, 32, opts.symmetric, True) == ["emb"]
    path = tmp_path / "q.onnx"
    onnx.save(model, str(path))
    assert "GatherBlockQuantized" in _ops(path)
    del table
    ids = np.array([[0, 5, 8191]], np.int64)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    assert out.shape == (1, DIM)


def test_fp16_keeps_io_float32(tmp_path: Path) -> None:
    _, dst, _ = _apply(fp16.SPEC, "encoder", tmp_path)
    model = onnx.load(str(dst))
    assert TensorProto.FLOAT16 in _init_types(dst)
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_int8_dynamic_integer_ops_and_gelu_exclusion(tmp_path: Path) -> None:
    _, dst, _ = _apply(int8_dynamic.SPEC, "encoder", tmp_path)
    ops = _ops(dst)
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    # The GELU-fed projection stays out of integer compute but still ships int8 weights.
    assert TensorProto.INT8 in _init_types(dst)


def test_int8_dynamic_convnet_with_constant_node_weights(tmp_path: Path) -> None:
    _, dst, err = _apply(int8_dynamic.SPEC, "convnet", tmp_path)
    assert "ConvInteger" in _ops(dst)
    assert err < 0.05


@pytest.mark.parametrize("spec", [int8_weight.SPEC, fp16.SPEC, int8_static.SPEC], ids=lambda s: s.name)
def test_convnet_other_steps(spec: StepSpec, tmp_path: Path) -> None:
    _, _dst, err = _apply(spec, "convnet", tmp_path)
    assert err < TOLERANCE[spec.name]


def test_int4_refuses_a_model_with_nothing_to_make_4bit(tmp_path: Path) -> None:
    """A pure CNN has no MatMul for MatMulNBits: an "int4" result would be a mislabelled int8-weight model."""
    with pytest.raises(SlimserveError, match="nothing can become 4-bit") as caught:
        _apply(int4_weight.SPEC, "convnet", tmp_path)
    assert "int8" in (caught.value.hint or "")


@pytest.mark.parametrize("kind", ["control", "lstm"])
def test_int8_dynamic_control_flow_and_recurrent(kind: str, tmp_path: Path) -> None:
    """Either it quantizes (subgraphs stay float) or it fails with one ToolError line: never a traceback."""
    try:
        _, dst, err = _apply(int8_dynamic.SPEC, kind, tmp_path)
    except ToolError as exc:
        assert "\n" not in exc.message and exc.message.startswith("int8-dynamic:")
        return
    assert err < 0.05
    assert _ops(dst) & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}


def test_int8_static_needs_calibration(tmp_path: Path) -> None:
    with pytest.raises(SlimserveError, match="calibration"):
        _apply(int8_static.SPEC, "encoder", tmp_path, calibrate=False)


def test_int8_static_writes_qdq(tmp_path: Path) -> None:
    _, dst, _ = _apply(int8_static.SPEC, "encoder", tmp_path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(dst)


@pytest.mark.parametrize("spec", STEPS, ids=lambda s: s.name)
def test_missing_and_garbage_inputs(spec: StepSpec, tmp_path: Path) -> None:
    ctx = StepContext(work_dir=tmp_path, calibration=_feeds("encoder"))
    with pytest.raises(SlimserveError):
        spec.run(tmp_path / "absent.onnx", tmp_path / "o1.onnx", ctx, spec.options())
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf")
    with pytest.raises(ToolError) as info:
        spec.run(junk, tmp_path / "o2.onnx", ctx, spec.options())
    assert "\n" not in info.value.message


def test_block_quantize_roundtrip() -> None:
    w = _w(128, 48)
    for bits, tol in ((8, 0.01), (4, 0.15)):
        for sym in (True, False):
            q, scale, zp = nbits.block_quantize(w, bits, 32, sym, search_clip=True)
            zpf = np.full(scale.shape, 2.0 ** (bits - 1)) if zp is None else zp.astype(np.float32)
            deq = ((q.astype(np.float32) - zpf[..., None]) * scale[..., None]).reshape(48, 128).T
            assert np.linalg.norm(deq - w) / np.linalg.norm(w) < tol
    assert nbits.pack_bits(np.array([[1, 2, 15, 0]], np.uint8), 4).tolist() == [[0x21, 0x0F]]


def test_int8_chooses_the_more_faithful_method_on_this_model(tmp_path: Path) -> None:
    """`int8` compares int8-weight and int8-dynamic on the model's own calibration feeds and says so."""
    src = BUILDERS["encoder"](tmp_path / "encoder.onnx")
    work = tmp_path / "work"
    work.mkdir()
    result = int8_auto.SPEC.run(src, tmp_path / "out" / "model.onnx", StepContext(work_dir=work, calibration=_feeds("encoder")), int8_auto.SPEC.options())
    scores = result.details["candidates"]
    assert set(scores) == {"int8-weight", "int8-dynamic"}
    order = ["int8-weight", "int8-dynamic"]  # ties go to the earlier candidate
    best = max(scores, key=lambda name: (scores[name]["mean"], scores[name]["min"], -order.index(name)))
    assert result.details["delegate"] == best and result.notes[0].startswith(f"int8 = {best}")
