"""Step `int8-weight`: weights stored as int8, activations stay float.

What it writes (chosen by measurement on all-MiniLM-L6-v2, benchmarks/results/quant_sweep.md):
- MatMul / Gemm weights: symmetric int8 with one float16 scale per 32 inputs of each output channel,
  rebuilt by plain ONNX `Cast -> Mul -> Reshape` that ORT constant-folds at load. The session then
  computes in float32 exactly like the original model, so the only error is weight rounding:
  mean cosine 0.9998, min 0.9991 on the eval texts at 23.6 MB. Conv weights: one scale per output
  channel in the same form.
  Rejected, measured: `DequantizeLinear(per-axis) -> MatMul` (ORT 1.32 fuses it at load into
  MatMulNBits with accuracy_level 4, i.e. int8 activations: min cosine fell to 0.992); explicit
  MatMulNBits bits=8 (accuracy_level 0 dequantizes every call: ~6x slower warm; level 4 loses fidelity
  like the DQ form); one scale per whole channel (min cosine 0.994, below the 0.995 bar).
  The price of folding: ~90 MB of float32 weights resident after load and a few tens of ms more load.
- Embedding tables (Gather on a 2-D float initializer, axis 0): an int8 table with one float scale per
  row: `Mul(Cast(Gather(table_i8, ids)), Gather(row_scales, ids))`. The table stays int8 in memory and
  only the looked-up rows are widened. `DequantizeLinear -> Gather` runs the dequantization of the whole
  table on every call when ORT does not fold it (warm latency 23 ms instead of 3 ms); GatherBlockQuantized
  (uint8, bits=8) was as faithful but 0.25 MB larger (block scales).

Tensors below `MIN_ELEMENTS` (biases, LayerNorm, tiny tables) stay float: they cost bytes nobody
notices and carry most of the precision risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from slimserve.errors import ToolError, first_line
from slimserve.optimizer import onnx_io
from slimserve.optimizer.steps import graph_opt
from slimserve.optimizer.steps.base import StepContext, StepResult, StepSpec, option

if TYPE_CHECKING:
    import onnx

STEP = "int8-weight"
MIN_ELEMENTS = 4096

MatMulMode = Literal["fold", "dq", "nbits", "castmul", "none"]
EmbeddingMode = Literal["gather-mul", "gbq", "dq", "none"]


@dataclass(frozen=True)
class Int8WeightOptions:
    """How each kind of weight is stored. Defaults are the measured choice (see module docstring)."""

    matmul: MatMulMode = option(  # noqa: RUF009 - option() is dataclasses.field with help
        "fold", "MatMul/Gemm weights: fold (int8 x fp16 block scales, folded at load), dq (DequantizeLinear "
        "per channel), nbits (MatMulNBits bits=8), castmul (one scale per channel), none (float)")
    embeddings: EmbeddingMode = option(  # noqa: RUF009 - option() is dataclasses.field with help
        "gather-mul", "embedding tables: gather-mul (int8 rows x row scales), gbq (GatherBlockQuantized), "
        "dq (DequantizeLinear->Gather), none (float)")
    conv: bool = option(True, "quantize Conv weights (one scale per output channel)")
    min_elements: int = option(MIN_ELEMENTS, "tensors smaller than this stay float")
    block: int = option(32, "inputs per scale along the reduction axis (fold and nbits)")
    accuracy_level: int = option(0, "MatMulNBits only: 0 keeps activations float, 4 lets ORT make them int8")
    search_clip: bool = option(False, "MatMulNBits only: search each block's clipping range")


def symmetric_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along `axis` (range [-127, 127], zero point 0).

    Returns (q, scale) with `scale` shaped like w.shape[axis]. An all-zero slice gets scale 1 so that
    dequantization never divides by zero.
    """
    w = np.asarray(w, dtype=np.float32)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


class WeightGraph:
    """Index of one ONNX graph: initializers by name and the nodes consuming each value."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            # Subgraph reads count: a weight an If/Loop body also uses must not be rewritten away.
            for name in dict.fromkeys(graph_opt.node_inputs(node)):
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self._used: set[str] = {n for n in self.inits} | {o for n in graph.node for o in n.output}

    def fresh(self, base: str) -> str:
        """A value name not used anywhere in the graph yet."""
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def float_weight(self, name: str, min_elements: int) -> np.ndarray | None:
        """The initializer `name` as float32 if it is a float tensor worth quantizing, else None."""
        from onnx import TensorProto, numpy_helper

        init = self.inits.get(name)
        if init is None or init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            return None
        if int(np.prod(init.dims)) < min_elements or name in self.graph_outputs:
            return None
        return numpy_helper.to_array(init).astype(np.float32)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def ensure_ms_domain(model: onnx.ModelProto) -> None:
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _weight_axis(node: onnx.NodeProto, rank: int) -> int | None:
    """The output-channel axis of the weight input of `node`, or None if it is not a weight input."""
    if node.op_type == "MatMul":
        return 1 if rank == 2 else None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "Conv":
        return 0
    return None


def _dequantized(
    g: WeightGraph,
    name: str,
    w: np.ndarray,
    axis: int,
    opts: Int8WeightOptions,
    opset: int,
    reduce_axis: int | None,
) -> list[onnx.NodeProto]:
    """Nodes + initializers that rebuild float `name` from int8; returns the new nodes."""
    from onnx import helper, numpy_helper

    if opts.matmul == "dq" and opset >= 13:
        q, scale = symmetric_int8(w, axis)
        q_name, s_name = g.fresh(name + "_i8"), g.fresh(name + "_scale")
        g.graph.initializer.extend(
            [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)]
        )
        return [
            helper.make_node(
                "DequantizeLinear", [q_name, s_name], [name], name=g.fresh(name + "_dq"), axis=axis
            )
        ]
    return _fold_nodes(g, name, w, axis, reduce_axis if opts.matmul == "fold" else None, opts.block)


def _fold_nodes(
    g: WeightGraph, name: str, w: np.ndarray, axis: int, reduce_axis: int | None, block: int
) -> list[onnx.NodeProto]:
    """int8 weight * float16 scales via Cast/Mul/Reshape: plain ONNX that ORT constant-folds at load.

    With `reduce_axis` (2-D weights whose reduction length divides by `block`) each output channel gets
    one scale per `block` inputs; otherwise one scale per output channel. Folding means the session
    computes in float32 exactly like the original model: the only error is the weight rounding.
    """
    from onnx import helper, numpy_helper

    shape = list(w.shape)
    if (
        reduce_axis is not None
        and w.ndim == 2
        and shape[reduce_axis] % block == 0
        and shape[reduce_axis] > block
    ):
        split = shape[:reduce_axis] + [shape[reduce_axis] // block, block] + shape[reduce_axis + 1 :]
        blocks = w.reshape(split)
        amax = np.abs(blocks).max(axis=reduce_axis + 1, keepdims=True)
    else:
        split = shape
        blocks = w
        amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float16)
    scale = np.where(scale.astype(np.float32) > 0, scale, np.float16(1.0))
    q = np.clip(np.rint(blocks / scale.astype(np.float32)), -127, 127).astype(np.int8)
    q_name, s_name = g.fresh(name + "_i8"), g.fresh(name + "_scale16")
    g.graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
    qf, sf = g.fresh(name + "_qf"), g.fresh(name + "_sf")
    nodes = [
        helper.make_node("Cast", [q_name], [qf], name=g.fresh(name + "_castq"), to=1),
        helper.make_node("Cast", [s_name], [sf], name=g.fresh(name + "_casts"), to=1),
    ]
    if split == shape:
        nodes.append(helper.make_node("Mul", [qf, sf], [name], name=g.fresh(name + "_mul")))
        return nodes
    prod, shape_name = g.fresh(name + "_blocks"), g.fresh(name + "_shape")
    g.graph.initializer.append(numpy_helper.from_array(np.asarray(shape, dtype=np.int64), shape_name))
    nodes += [
        helper.make_node("Mul", [qf, sf], [prod], name=g.fresh(name + "_mul")),
        helper.make_node("Reshape", [prod, shape_name], [name], name=g.fresh(name + "_reshape")),
    ]
    return nodes


def quantize_linear_weights(model: onnx.ModelProto, opts: Int8WeightOptions) -> int:
    """Replace float MatMul/Gemm/Conv weights with int8 + per-channel scale; returns how many."""
    g = WeightGraph(model.graph)
    opset = _opset(model)
    new_nodes: list[onnx.NodeProto] = []
    done = []
    for name in list(g.inits):
        users = g.consumers.get(name, [])
        if not users or any(n.op_type == "Gather" for n in users):
            continue
        if not opts.conv and any(n.op_type == "Conv" for n in users):
            continue
        axes = {
            _weight_axis(n, len(g.inits[name].dims)) if list(n.input).index(name) == 1 else None
            for n in users
        }
        if len(axes) != 1 or None in axes:
            continue
        w = g.float_weight(name, opts.min_elements)
        if w is None:
            continue
        axis = axes.pop()
        if axis is None:
            continue
        reduce_axis = 1 - axis if w.ndim == 2 else None
        new_nodes += _dequantized(g, name, w, axis, opts, opset, reduce_axis)
        done.append(name)
    drop_initializers(model.graph, done)
    _prepend(model.graph, new_nodes)
    return len(done)


def quantize_embeddings(model: onnx.ModelProto, mode: EmbeddingMode, min_elements: int) -> int:
    """Replace Gather(float table, ids) (axis 0) with an int8 table and per-row scales; returns how many."""
    g = WeightGraph(model.graph)
    done = []
    for node in list(model.graph.node):
        if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        name = node.input[0]
        if len(g.consumers.get(name, [])) != 1 or name not in g.inits or len(g.inits[name].dims) != 2:
            continue
        w = g.float_weight(name, min_elements)
        if w is None:
            continue
        if mode == "gbq" and w.shape[1] % 16:
            continue
        build = {"gather-mul": _gather_mul, "gbq": _gather_block_quantized, "dq": _dq_gather}[mode]
        nodes = build(g, node, w)
        idx = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for k, n in enumerate(nodes):
            model.graph.node.insert(idx + k, n)
        done.append(name)
    drop_initializers(model.graph, done)
    if mode == "gbq" and done:
        ensure_ms_domain(model)
    return len(done)


def _gather_mul(g: WeightGraph, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto]:
    """Gather the int8 rows and their scales, widen only those rows: memory stays int8."""
    from onnx import helper, numpy_helper

    name, ids, out = node.input[0], node.input[1], node.output[0]
    q, scale = symmetric_int8(w, 0)
    q_name, s_name = g.fresh(name + "_i8"), g.fresh(name + "_row_scale")
    g.graph.initializer.extend(
        [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale.reshape(-1, 1), s_name)]
    )
    rows, rows_f, row_s = g.fresh(out + "_i8"), g.fresh(out + "_f"), g.fresh(out + "_s")
    return [
        helper.make_node("Gather", [q_name, ids], [rows], name=g.fresh(node.name + "_q"), axis=0),
        helper.make_node("Cast", [rows], [rows_f], name=g.fresh(node.name + "_cast"), to=1),
        helper.make_node("Gather", [s_name, ids], [row_s], name=g.fresh(node.name + "_scale"), axis=0),
        helper.make_node("Mul", [rows_f, row_s], [out], name=g.fresh(node.name + "_mul")),
    ]


def _gather_block_quantized(g: WeightGraph, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto]:
    """com.microsoft GatherBlockQuantized on a uint8 table (bits=8), blocks along the row."""
    from onnx import helper, numpy_helper

    name = node.input[0]
    dim = w.shape[1]
    block = max(b for b in (16, 32, 64, 128, 256) if dim % b == 0)
    blocks = w.reshape(w.shape[0], dim // block, block)
    amax = np.abs(blocks).max(axis=2)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
    q_name, s_name = g.fresh(name + "_u8"), g.fresh(name + "_scales")
    g.graph.initializer.extend(
        [
            numpy_helper.from_array(q.reshape(w.shape).astype(np.uint8), q_name),
            numpy_helper.from_array(scale, s_name),
        ]
    )
    return [
        helper.make_node(
            "GatherBlockQuantized",
            [q_name, node.input[1], s_name],
            [node.output[0]],
            name=g.fresh(node.name + "_gbq"),
            domain="com.microsoft",
            bits=8,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        )
    ]


def _dq_gather(g: WeightGraph, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto]:
    """DequantizeLinear(table, per-row scale) -> Gather: simplest, but ORT may fold it to float at load."""
    from onnx import helper, numpy_helper

    name = node.input[0]
    q, scale = symmetric_int8(w, 0)
    q_name, s_name, deq = g.fresh(name + "_i8"), g.fresh(name + "_row_scale"), g.fresh(name + "_deq")
    g.graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
    return [
        helper.make_node("DequantizeLinear", [q_name, s_name], [deq], name=g.fresh(name + "_dq"), axis=0),
        helper.make_node("Gather", [deq, node.input[1]], [node.output[0]], name=node.name, axis=0),
    ]


def drop_initializers(graph: onnx.GraphProto, names: list[str]) -> None:
    gone = set(names)
    keep = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _prepend(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Dequantization nodes depend only on initializers, so putting them first keeps topological order."""
    for k, n in enumerate(nodes):
        graph.node.insert(k, n)


def block_quantize(
    w: np.ndarray,
    bits: int,
    block: int,
    symmetric: bool,
    search_clip: bool = False,
    importance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize a [K, N] weight in blocks of `block` along K, as MatMulNBits stores it.

    Returns (q, scales, zero_points): q is uint8 [N, k_blocks, block] holding values in [0, 2**bits), scales
    float32 [N, k_blocks], zero points uint8 [N, k_blocks] (None when symmetric: MatMulNBits then uses
    2**(bits-1)). Symmetric blocks map the largest magnitude to -2**(bits-1) so no level is wasted.
    `search_clip` shrinks each block's range to the factor (1.0 ... 0.5) with the least squared error,
    which matters at 4 bits where one outlier otherwise flattens the whole block. `importance` (length K,
    e.g. the mean squared input activation of each input feature) weights that error, so the search
    protects the features that carry the most signal (the idea behind activation-aware quantization).
    """
    w = np.asarray(w, dtype=np.float32).T  # [N, K]
    n, k = w.shape
    kb = -(-k // block)
    blocks = np.pad(w, ((0, 0), (0, kb * block - k))).reshape(n, kb, block)
    weight = np.ones((1, kb, block), np.float32)
    if importance is not None:
        weight = np.pad(np.asarray(importance, np.float32), (0, kb * block - k)).reshape(1, kb, block)
    best: list[np.ndarray] = []
    best_err = np.full(blocks.shape[:2], np.inf, dtype=np.float32)
    for alpha in np.linspace(1.0, 0.5, 11) if search_clip else (1.0,):
        cand = _quantize_blocks(blocks, bits, symmetric, float(alpha))
        err = (((_dequantize_blocks(cand[0], cand[1], cand[2]) - blocks) ** 2) * weight).sum(axis=2)
        if not best:
            best, best_err = list(cand), err
            continue
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best[0] = np.where(better[..., None], cand[0], best[0])
        best[1] = np.where(better, cand[1], best[1])
        best[2] = np.where(better, cand[2], best[2])
    q, scale, zp = best
    return q.astype(np.uint8), scale.astype(np.float32), None if symmetric else zp.astype(np.uint8)


def _quantize_blocks(
    blocks: np.ndarray, bits: int, symmetric: bool, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    levels = 2**bits
    if symmetric:
        idx = np.abs(blocks).argmax(axis=2)[..., None]
        peak = np.take_along_axis(blocks, idx, axis=2)[..., 0] * alpha
        scale = np.where(peak != 0, peak / -(levels // 2), 1.0)
        zp = np.full(scale.shape, levels // 2, dtype=np.float32)
    else:
        lo = np.minimum(blocks.min(axis=2), 0) * alpha
        hi = np.maximum(blocks.max(axis=2), 0) * alpha
        scale = np.where(hi > lo, (hi - lo) / (levels - 1), 1.0)
        zp = np.clip(np.rint(-lo / scale), 0, levels - 1)
    q = np.clip(np.rint(blocks / scale[..., None]) + zp[..., None], 0, levels - 1)
    return q, scale, zp


def _dequantize_blocks(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    return np.asarray((q - zp[..., None]) * scale[..., None])


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 values of `bits` bits along the last axis, low-order bits first (MatMulNBits layout)."""
    if bits == 8:
        return q.astype(np.uint8)
    per = 8 // bits
    pad = (-q.shape[-1]) % per
    q = np.pad(q.astype(np.uint8), [(0, 0)] * (q.ndim - 1) + [(0, pad)])
    q = q.reshape(*q.shape[:-1], -1, per)
    out = np.zeros(q.shape[:-1], dtype=np.uint8)
    for i in range(per):
        out |= (q[..., i] << (bits * i)).astype(np.uint8)
    return out


def matmul_nbits_nodes(
    g: WeightGraph,
    node: onnx.NodeProto,
    w: np.ndarray,
    bits: int,
    block: int,
    symmetric: bool,
    accuracy_level: int,
    search_clip: bool = False,
    importance: np.ndarray | None = None,
) -> list[onnx.NodeProto]:
    """A com.microsoft MatMulNBits node (and its initializers) replacing MatMul(A, w)."""
    from onnx import helper, numpy_helper

    k, n = w.shape
    q, scale, zp = block_quantize(w, bits, block, symmetric, search_clip, importance)
    base = node.input[1]
    b_name, s_name = g.fresh(base + f"_q{bits}"), g.fresh(base + "_scales")
    g.graph.initializer.extend(
        [numpy_helper.from_array(pack_bits(q, bits), b_name), numpy_helper.from_array(scale, s_name)]
    )
    inputs = [node.input[0], b_name, s_name]
    if zp is not None:
        zp_name = g.fresh(base + "_zp")
        g.graph.initializer.append(numpy_helper.from_array(pack_bits(zp, bits), zp_name))
        inputs.append(zp_name)
    return [
        helper.make_node(
            "MatMulNBits",
            inputs,
            list(node.output),
            name=g.fresh((node.name or base) + f"_nbits{bits}"),
            domain="com.microsoft",
            K=k,
            N=n,
            bits=bits,
            block_size=block,
            accuracy_level=accuracy_level,
        )
    ]


def replace_matmuls_nbits(
    model: onnx.ModelProto,
    bits: int,
    block: int,
    symmetric: bool,
    accuracy_level: int,
    *,
    search_clip: bool = False,
    exclude: frozenset[str] = frozenset(),
    min_elements: int = MIN_ELEMENTS,
    importance: dict[str, np.ndarray] | None = None,
) -> list[str]:
    """Swap every MatMul with a 2-D float constant weight (sole consumer) for MatMulNBits; returns names."""
    g = WeightGraph(model.graph)
    done, weights = [], []
    for idx, node in enumerate(list(model.graph.node)):
        if node.op_type != "MatMul" or node.name in exclude or len(g.consumers.get(node.input[1], [])) != 1:
            continue
        w = g.float_weight(node.input[1], min_elements)
        if w is None or w.ndim != 2:
            continue
        imp = (importance or {}).get(node.name)
        new = matmul_nbits_nodes(g, node, w, bits, block, symmetric, accuracy_level, search_clip, imp)
        pos = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(pos, new[0])
        done.append(node.name)
        weights.append(node.input[1])
    drop_initializers(model.graph, weights)
    if done:
        ensure_ms_domain(model)
    return done


def quantize(src: Path, dst: Path, ctx: StepContext, opts: Int8WeightOptions, step: str = STEP) -> StepResult:
    """Weight-only int8 of `src` into `dst` with `opts`."""
    prepared, notes = graph_opt.normalize_for_quant(Path(src), ctx.work_dir, step)
    model = onnx_io.read_model(prepared, step)
    try:
        n_emb = (
            0 if opts.embeddings == "none" else quantize_embeddings(model, opts.embeddings, opts.min_elements)
        )
        if opts.matmul == "nbits":
            n_lin = len(
                replace_matmuls_nbits(
                    model,
                    8,
                    opts.block,
                    True,
                    opts.accuracy_level,
                    search_clip=opts.search_clip,
                    min_elements=opts.min_elements,
                )
            )
            n_lin += quantize_linear_weights(model, Int8WeightOptions(matmul="castmul", conv=opts.conv))
        elif opts.matmul != "none":
            n_lin = quantize_linear_weights(model, opts)
        else:
            n_lin = 0
    except (ValueError, KeyError, IndexError) as exc:
        raise ToolError(f"{step}: cannot rewrite the weights of {Path(src).name}: {first_line(exc)}") from exc
    if n_emb + n_lin == 0:
        notes += ("no float MatMul/Gemm/Conv weight or embedding table was large enough to quantize",)
    onnx_io.save_model(model, Path(dst), step)
    graph_opt.check_session(Path(dst), step)
    return StepResult(
        path=Path(dst),
        notes=notes + ("weights int8 (per-channel / per-row symmetric); activations and compute stay float",),
        details={
            "quantized_linear_weights": n_lin,
            "quantized_embeddings": n_emb,
            "matmul": opts.matmul,
            "embeddings": opts.embeddings,
        },
    )


def run(src: Path, dst: Path, ctx: StepContext, options: Int8WeightOptions) -> StepResult:
    """Weight-only int8 (the measured defaults unless the recipe sets options)."""
    with ctx.progress.stage(f"{STEP}: int8 weights, float activations"):
        return quantize(Path(src), Path(dst), ctx, options)


SPEC = StepSpec(
    name=STEP,
    help="Weight-only int8: MatMul/Gemm weights int8 with a scale per 32 inputs (Conv per channel), embedding "
    "tables int8 per row; expanded to float32 at load, so compute stays float32.",
    run=run,
    options=Int8WeightOptions,
)
