"""n-bit block quantization as ORT's com.microsoft ops store it: MatMulNBits for MatMul weights and
GatherBlockQuantized for 4-bit embedding tables (used by int4-weight, and by int8-weight's nbits form)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slimserve.optimizer.weight_graph import MIN_ELEMENTS, WeightGraph, drop_initializers, ensure_ms_domain

if TYPE_CHECKING:
    import onnx

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
    bias: str | None = None,
) -> list[onnx.NodeProto]:
    """A com.microsoft MatMulNBits node (and its initializers) replacing MatMul(A, w) (+ `bias`, for a Gemm)."""
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
    if bias is not None:  # inputs 3 (zero points) and 4 (g_idx) may be empty; 5 is the bias
        inputs += [""] * (5 - len(inputs)) + [bias]
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
    gemm: bool = False,
) -> list[str]:
    """Swap every MatMul with a 2-D float constant weight (sole consumer) for MatMulNBits; returns names.
    With `gemm`, also Gemm(A, W[, bias]) without transA/alpha/beta (a weight transposed by transB is
    stored transposed back), its bias going to MatMulNBits' bias input: no float weight is left to fold."""
    g = WeightGraph(model.graph)
    done, weights = [], []
    for idx, node in enumerate(list(model.graph.node)):
        is_gemm = gemm and node.op_type == "Gemm" and _plain_gemm(g, node)
        if (node.op_type != "MatMul" and not is_gemm) or node.name in exclude \
                or len(g.consumers.get(node.input[1], [])) != 1:
            continue
        w = g.float_weight(node.input[1], min_elements)
        if w is None or w.ndim != 2:
            continue
        bias, matmul = None, node
        if is_gemm:
            w = w.T if any(a.name == "transB" and a.i for a in node.attribute) else w
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            matmul = _as_matmul(node)
        imp = (importance or {}).get(node.name)
        new = matmul_nbits_nodes(g, matmul, w, bits, block, symmetric, accuracy_level, search_clip, imp, bias)
        pos = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(pos, new[0])
        done.append(node.name)
        weights.append(node.input[1])
    drop_initializers(model.graph, weights)
    if done:
        ensure_ms_domain(model)
    return done


def _plain_gemm(g: WeightGraph, node: onnx.NodeProto) -> bool:
    """Gemm = A @ W + bias: no transA, alpha = beta = 1, a 1-D float initializer bias (or none)."""
    from onnx import TensorProto

    attrs = {a.name: (a.f if a.type == a.FLOAT else a.i) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return False
    if len(node.input) > 2 and node.input[2]:
        bias = g.inits.get(node.input[2])
        return bias is not None and len(bias.dims) == 1 and bias.data_type == TensorProto.FLOAT
    return True


def _as_matmul(node: onnx.NodeProto) -> onnx.NodeProto:
    """The Gemm's A and W inputs and its output, as the MatMul matmul_nbits_nodes replaces."""
    from onnx import helper

    return helper.make_node("MatMul", list(node.input[:2]), list(node.output), name=node.name)


def replace_gathers_4bit(model: onnx.ModelProto, block: int, symmetric: bool, search_clip: bool) -> list[str]:
    """Gather(float table [V, D], ids) -> GatherBlockQuantized(uint8 packed 4-bit, blocks along D)."""
    from onnx import helper, numpy_helper

    g = WeightGraph(model.graph)
    done = []
    for node, w in g.embedding_tables(1 << 18):  # only real vocabularies; small tables cost little as float
        name = node.input[0]
        if w.shape[1] % block:
            continue
        # block_quantize works on [K, N] with blocks along K: pass the table transposed (K = D, N = V).
        q, scale, zp = block_quantize(w.T, 4, block, symmetric, search_clip)
        packed = pack_bits(q.reshape(w.shape[0], -1), 4)
        q_name, s_name = g.fresh(name + "_q4"), g.fresh(name + "_scales")
        g.graph.initializer.extend(
            [numpy_helper.from_array(packed, q_name), numpy_helper.from_array(scale, s_name)]
        )
        inputs = [q_name, node.input[1], s_name]
        if zp is not None:
            zp_name = g.fresh(name + "_zp")
            g.graph.initializer.append(numpy_helper.from_array(pack_bits(zp, 4), zp_name))
            inputs.append(zp_name)
        new = helper.make_node(
            "GatherBlockQuantized",
            inputs,
            list(node.output),
            name=g.fresh(node.name + "_q4"),
            domain="com.microsoft",
            bits=4,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        )
        g.replace_node(node, [new])
        done.append(name)
    drop_initializers(model.graph, done)
    if done:
        ensure_ms_domain(model)
    return done
