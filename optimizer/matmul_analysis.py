"""What the quantizers need to know about a model's MatMuls: their constant weights, their inputs on
calibration feeds, which ones read a GELU output, and a ranking by the error dynamic int8 would add
(used by int8-dynamic, int8-static and int4-weight)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slimserve.optimizer import activations, onnx_io
from slimserve.optimizer.steps.base import Feed

if TYPE_CHECKING:
    import onnx

GELU_OPS = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu"}
MAX_ROWS = 4096  # captured activation rows per tensor: enough for a stable error estimate
STEP = "quantize"


def constant_matmul_weights(model_path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """MatMul/Gemm nodes of the main graph with a constant 2-D float weight: name -> (input A, W as [K, N])."""
    import onnx
    from onnx import numpy_helper

    model = onnx_io.read_model(model_path, STEP)
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if attrs.get("transA", 0):
            continue
        w = numpy_helper.to_array(init)
        out[node.name] = (node.input[0], w.T if attrs.get("transB", 0) else w)
    return out


def capture_inputs(
    model_path: Path, node_names: Sequence[str], feeds: Sequence[Feed]
) -> dict[str, np.ndarray]:
    """Run the model on `feeds` and return the first input of each named node as [rows, K] float32."""

    model = onnx_io.read_model(model_path, STEP)
    graph_inputs = {i.name for i in model.graph.input}
    names = set(node_names) - {""}  # an unnamed node cannot be told apart (graph_tools.name_nodes names them)
    wanted = sorted({n.input[0] for n in model.graph.node if n.name in names} - graph_inputs)
    rows: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for _, values in activations.capture(model, wanted, feeds, STEP):
        for n, v in zip(wanted, values):
            rows[n].append(np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1]))
    return {n: activations.subsample(np.concatenate(parts), MAX_ROWS) for n, parts in rows.items() if parts}


def dynamic_error(x: np.ndarray, w: np.ndarray, per_channel: bool, reduce_range: bool) -> float:
    """Relative output error of one MatMul under ORT-style dynamic quantization.

    Activations: uint8, asymmetric, one range per tensor (what DynamicQuantizeLinear does per call; we use
    the range over the captured rows, a slight overestimate). Weights: symmetric int8 per channel or per
    tensor, 7-bit when `reduce_range`.
    """
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    sx = (hi - lo) / 255.0 or 1.0
    zx = np.rint(-lo / sx)
    xq = (np.clip(np.rint(x / sx) + zx, 0, 255) - zx) * sx
    qmax = 63.0 if reduce_range else 127.0
    amax = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
    sw = np.where(amax > 0, amax / qmax, 1.0)
    wq = np.clip(np.rint(w / sw), -qmax, qmax) * sw
    ref = x @ w
    return float(np.linalg.norm(xq @ wq - ref)) / max(float(np.linalg.norm(ref)), 1e-12)


def gelu_fed_matmuls(model_path: Path) -> list[str]:
    """MatMuls whose input is a GELU output (fused op, or the Erf form x*0.5*(1+erf(x/sqrt2)))."""

    model = onnx_io.read_model(model_path, STEP, with_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}

    def is_gelu(value: str, depth: int = 0) -> bool:
        node = producer.get(value)
        if node is None or depth > 3:
            return False
        if node.op_type in GELU_OPS:
            return True
        if node.op_type == "Mul":  # the Erf form ends with Mul(...); look a few nodes up for the Erf
            return any(_has_erf(producer, i, 3) for i in node.input)
        return False

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and is_gelu(n.input[0])]


def _has_erf(producer: dict[str, onnx.NodeProto], value: str, depth: int) -> bool:
    node = producer.get(value)
    if node is None or depth < 0:
        return False
    return node.op_type == "Erf" or any(_has_erf(producer, i, depth - 1) for i in node.input)


def rank_by_dynamic_error(
    model_path: Path, feeds: Sequence[Feed], per_channel: bool = True, reduce_range: bool = False
) -> list[str]:
    """Constant-weight MatMuls, worst first by `dynamic_error` on (up to 16) calibration feeds; [] without."""
    weights = constant_matmul_weights(model_path)
    if not weights or not feeds:
        return []
    xs = capture_inputs(model_path, list(weights), feeds[:16])
    scores = {name: dynamic_error(xs[x], w, per_channel, reduce_range) for name, (x, w) in weights.items() if x in xs}
    return sorted(scores, key=scores.get, reverse=True)  # type: ignore[arg-type]
