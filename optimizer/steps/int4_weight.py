"""Step `int4-weight`: 4-bit block-quantized weights (ORT MatMulNBits) and 4-bit embeddings.

What it writes:
- every MatMul with a constant 2-D weight becomes com.microsoft MatMulNBits, bits=4, blocks of 32 along K,
  asymmetric (per-block scale and zero point), rounded by GPTQ: one input feature at a time, each rounding
  error compensated on the features not yet rounded through the inverse Hessian of the MatMul's inputs on
  the calibration feeds (all 64 built-in calibration texts: GPTQ is data-hungry), each block's range chosen
  by an activation-weighted least-squares clip search when the block is reached;
- the word-embedding table becomes com.microsoft GatherBlockQuantized (4 bits, blocks of 64 along the row,
  float16 scales + a Cast back to float32), so only looked-up rows are dequantized;
- the 12 MatMuls (at most a third) whose 4-bit form hurts the MODEL's outputs most (one probe session per
  MatMul with only it 4-bit, on 8 calibration feeds; a MatMul's own output error ranks worse) stay int8:
  in the folded int8-weight form (float32 at load, float32 speed), or for a model over 1 GiB of weights as
  MatMulNBits bits=8, which stays int8 in memory (`int8_form`; `int8` makes the same choice).

Why these defaults (benchmarks/int4_sweep.py, all-MiniLM-L6-v2, results in benchmarks/results/int4_sweep.md;
cosine of the sentence embedding vs sentence-transformers, eval = built-in eval set, held-out = 60 sentences
of the benchmark / tests/data/heldout_eval.jsonl):

| recipe | MB | eval mean / min | held-out means |
|---|---:|---:|---:|
| old default `int4-weight(method=rtn,keep_int8=8,calib_feeds=8,rank=output,emb_block=32,emb_scales=float32)` | 15.22 | 0.9806 / 0.914 | 0.9810 / 0.9816 |
| GPTQ (damp 0.01) instead of round-to-nearest, same layout | 15.22 | 0.9869 / 0.946 | 0.9870 / 0.9878 |
| + the 8 int8 ones ranked by model output error | 16.15 | 0.9901 / 0.970 | 0.9900 / 0.9904 |
| + float16 embedding scales (same fidelity, -0.73 MB) | 15.42 | 0.9901 / 0.970 | 0.9900 / 0.9904 |
| + 12 kept int8, embedding blocks of 64 | 15.77 | 0.9925 / 0.972 | 0.9925 / 0.9927 |
| **default**: + GPTQ damping 0.3 | 15.77 | 0.9936 / 0.982 | 0.9936 / 0.9938 |

GPTQ with a Hessian from 8 texts is worse than round-to-nearest (0.973); symmetric blocks and block 64
(MatMuls) lose 0.002-0.004; block 16 costs 1.5 MB for less than keeping MatMuls int8 buys; int8 embedding
rows instead of 4-bit cost 4.3 MB for +0.001. accuracy_level stays 0 (float activations: fp32 speed,
batch- and CPU-independent). Every earlier behaviour is reachable through the options. The costs: build
time (~25 s instead of ~7 s on MiniLM: Hessians, GPTQ, one probe session per MatMul) and ~5-10% slower
warm batch-1 latency (the 12 int8 MatMuls are folded to float32 at load).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import activations, graph_tools, int8_rewrites, matmul_analysis, nbits, onnx_io
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option
from slimserve.optimizer.steps.int8_auto import RESIDENT_ABOVE_BYTES, RESIDENT_INT8_LEVEL, weight_bytes
from slimserve.optimizer.weight_graph import MIN_ELEMENTS, WeightGraph, drop_initializers, ensure_ms_domain

if TYPE_CHECKING:
    import onnx

STEP = "int4-weight"
# rank=model loads the model once per MatMul: past this many weight bytes x MatMuls (MiniLM: 42 MB x 36) the
# probes would take minutes, and the MatMuls' own output error ranks them instead.
MODEL_RANK_BUDGET = 20 * 1024**3
# GPTQ costs ~K*K*N multiply-adds per [K, N] weight (MiniLM's largest: 9e8; a 7B LM's: 2e11). Past this a
# weight is rounded to nearest instead (an 8192 x 8192 one took minutes on 2 cores, with a 512 MB Hessian).
GPTQ_MAX_WORK = 2**36


@dataclass(frozen=True)
class Int4Options:
    """Knobs of the 4-bit recipe; defaults are the measured choice."""

    block: int = option(32, "MatMul weights per 4-bit block along K (a power of two >= 16)")
    symmetric: bool = option(False, "symmetric blocks (no zero points)")
    # 0: activations stay float inside MatMulNBits. 4 (int8 activations) was faster on short inputs but
    # ~35% slower than float32 at 256 tokens on this CPU, and slightly less faithful.
    accuracy_level: int = option(0, "MatMulNBits accuracy_level: 0 float activations, 4 int8 activations")
    search_clip: bool = option(True, "search each block's clipping range by least squared error")
    embeddings: bool = option(True, "4-bit embedding tables (GatherBlockQuantized); false: int8 rows")
    emb_block: int = option(64, "embedding values per 4-bit block")
    emb_scales: Literal["float32", "float16"] = option(
        "float16", "4-bit embedding scales' type (float16: rows dequantize in float16, then a Cast to float32)")
    keep_int8: int = option(12, "the N most sensitive MatMuls stay int8 (at most a third of them)")
    activation_aware: bool = option(True, "weight the clip search by calibration input energy per feature")
    method: Literal["rtn", "gptq"] = option(
        "gptq", "rtn: round each block to nearest; gptq: round column by column, compensating the error on the "
        "calibration inputs (needs calibration feeds, else rtn)")
    calib_feeds: int = option(64, "calibration feeds whose MatMul inputs weight the clip search and rank "
                                 "sensitivity (up to 4096 rows), and whose full input Hessians drive gptq")
    # 0.3, not GPTQ's usual 0.01: with 64 short calibration texts a damped Hessian generalizes better (swept).
    damp: float = option(0.3, "gptq: dampening added to the input Hessian, as a fraction of its mean diagonal")
    rank: Literal["output", "model"] = option(
        "model", "how keep_int8 ranks MatMuls: output: each one's own output error on calibration inputs; "
        "model: the whole model's output error with only that MatMul 4-bit (one session per MatMul)")
    rank_feeds: int = option(8, "rank=model: calibration feeds run per MatMul")
    int8_form: Literal["auto", "fold", "resident"] = option(
        "auto", "the kept int8 MatMuls: fold (int8 x block scales, widened to float32 at load: float32 speed), "
        "resident (MatMulNBits bits=8: stay int8 in memory); auto: resident for a model over 1 GiB of weights")

    def __post_init__(self) -> None:
        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"block size {self.block} is not a power of two >= 16 (MatMulNBits needs that)")
        if self.emb_block < 16 or self.emb_block & (self.emb_block - 1):
            raise ValueError(f"emb_block {self.emb_block} is not a power of two >= 16 (GatherBlockQuantized needs that)")
        if self.calib_feeds < 1 or self.rank_feeds < 1 or self.keep_int8 < 0 or self.damp < 0:
            raise ValueError("calib_feeds and rank_feeds must be >= 1, keep_int8 and damp >= 0")



def gptq_block_quantize(
    w: np.ndarray, hessian: np.ndarray, opts: Int4Options, importance: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """GPTQ (Frantar et al. 2022) on a [K, N] weight with MatMulNBits' blocks along K.

    Rounds one input feature (row of `w`) at a time and spreads its rounding error over the features not
    yet rounded, weighted by the inverse of `hessian` H = X^T X / rows of the calibration inputs X: the
    output error X(W - Wq), which is what the model sees, shrinks well below round-to-nearest's. Each
    block's scale and zero point are chosen (with the clip search) when the block is reached, from the
    already-compensated weights. Returns what `nbits.block_quantize` returns.
    """
    k, n = w.shape
    block, levels = opts.block, 16
    work = np.asarray(w, dtype=np.float64).T.copy()  # [N, K]: a column per input feature
    h = np.array(hessian, dtype=np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    work[:, dead] = 0.0
    h[np.diag_indices(k)] += opts.damp * float(np.mean(np.diag(h)))
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1
    except np.linalg.LinAlgError:
        return nbits.block_quantize(w, 4, block, opts.symmetric, opts.search_clip, importance)
    kb = k // block
    q = np.zeros((n, kb, block), np.uint8)
    scale = np.zeros((n, kb), np.float32)
    zp = np.zeros((n, kb), np.float32)
    batch = max(128, block)
    for i1 in range(0, k, batch):
        i2 = min(i1 + batch, k)
        w1, u1 = work[:, i1:i2].copy(), u[i1:i2, i1:i2]
        err1 = np.zeros_like(w1)
        for i in range(i2 - i1):
            col = i1 + i
            b, j = divmod(col, block)
            if j == 0:  # a new block: its range from the weights as compensated so far
                imp = None if importance is None else importance[col : col + block]
                _, s, z = nbits.block_quantize(w1[:, i : i + block].T, 4, block, opts.symmetric, opts.search_clip, imp)
                scale[:, b] = s[:, 0]
                zp[:, b] = levels // 2 if z is None else z[:, 0]
            s_b, z_b = scale[:, b].astype(np.float64), zp[:, b].astype(np.float64)
            qc = np.clip(np.rint(w1[:, i] / s_b) + z_b, 0, levels - 1)
            q[:, b, j] = qc
            e = (w1[:, i] - (qc - z_b) * s_b) / u1[i, i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        work[:, i2:] -= err1 @ u[i1:i2, i2:]
    return q, scale, None if opts.symmetric else zp.astype(np.uint8)


def _nbits_node(
    g: WeightGraph, node: onnx.NodeProto, k: int, n: int, quantized: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    opts: Int4Options,
) -> onnx.NodeProto:
    """MatMulNBits (4 bits) for MatMul(A, W) from an already quantized W, laid out as `nbits.matmul_nbits_nodes`."""
    from onnx import helper, numpy_helper

    q, scale, zp = quantized
    base = node.input[1]
    b_name, s_name = g.fresh(base + "_q4"), g.fresh(base + "_scales")
    g.graph.initializer.extend([numpy_helper.from_array(nbits.pack_bits(q, 4), b_name),
                                numpy_helper.from_array(scale.astype(np.float32), s_name)])
    inputs = [node.input[0], b_name, s_name]
    if zp is not None:
        zp_name = g.fresh(base + "_zp")
        g.graph.initializer.append(numpy_helper.from_array(nbits.pack_bits(zp, 4), zp_name))
        inputs.append(zp_name)
    return helper.make_node("MatMulNBits", inputs, list(node.output), name=g.fresh((node.name or base) + "_nbits4"),
                            domain="com.microsoft", K=k, N=n, bits=4, block_size=opts.block,
                            accuracy_level=opts.accuracy_level)


Quantized = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _gptq_affordable(shape: tuple[int, ...] | None) -> bool:
    """A constant [K, N] weight small enough for GPTQ: its work grows as K*K*N (and its Hessian as K*K)."""
    return shape is not None and len(shape) == 2 and shape[0] * shape[0] * shape[1] <= GPTQ_MAX_WORK


def input_hessians(model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Feed]) -> dict[str, np.ndarray]:
    """node name -> X^T X / rows over every calibration row of its first input X, not subsampled (GPTQ is
    data-hungry: on MiniLM a Hessian from 8 calibration texts scored 0.973 mean cosine, from 64 texts 0.987)."""
    wanted_nodes = set(names)
    input_of = {n.name: n.input[0] for n in model.graph.node if n.name in wanted_nodes}
    tensors = sorted(set(input_of.values()) - {i.name for i in model.graph.input})
    if not tensors or not feeds:
        return {}
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    for _, values in activations.capture(model, tensors, feeds, STEP):
        for name, value in zip(tensors, values):
            x = np.asarray(value, dtype=np.float64).reshape(-1, value.shape[-1])
            sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x
            rows[name] = rows.get(name, 0) + len(x)
    return {node: sums[t] / max(rows[t], 1) for node, t in input_of.items() if t in sums}


def plan_matmuls(model: onnx.ModelProto, inputs: dict[str, np.ndarray], opts: Int4Options,
                 hessians: dict[str, np.ndarray] | None = None) -> dict[str, tuple[np.ndarray, Quantized]]:
    """node name -> (float weight [K, N], its 4-bit form) for every MatMul that can become MatMulNBits: a
    constant 2-D float weight read by that node alone. GPTQ where calibration inputs were captured and K is
    a multiple of the block, else round-to-nearest (with the clip search)."""
    g = WeightGraph(model.graph)
    plans = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(g.consumers.get(node.input[1], [])) != 1:
            continue
        w = g.float_weight(node.input[1], MIN_ELEMENTS)
        if w is None or w.ndim != 2:
            continue
        x, h = inputs.get(node.name), (hessians or {}).get(node.name)
        imp = (x**2).mean(axis=0) if opts.activation_aware and x is not None else None
        if opts.method == "gptq" and h is not None and h.shape[0] == w.shape[0] and w.shape[0] % opts.block == 0:
            imp = np.diag(h).astype(np.float32) if opts.activation_aware else None
            plans[node.name] = (w, gptq_block_quantize(w, h, opts, imp))
        else:
            plans[node.name] = (w, nbits.block_quantize(w, 4, opts.block, opts.symmetric, opts.search_clip, imp))
    return plans


def dequantized(w: np.ndarray, quantized: Quantized) -> np.ndarray:
    """What MatMulNBits computes with instead of `w` ([K, N])."""
    q, scale, zp = quantized
    zpf = np.full(scale.shape, 8.0) if zp is None else zp.astype(np.float32)
    deq = ((q.astype(np.float32) - zpf[..., None]) * scale[..., None]).reshape(w.shape[1], -1)
    return np.asarray(deq[:, : w.shape[0]].T)


def apply_plans(model: onnx.ModelProto, plans: dict[str, tuple[np.ndarray, Quantized]], opts: Int4Options,
                exclude: frozenset[str]) -> list[str]:
    """Swap the planned MatMuls (but `exclude`) for MatMulNBits; returns their names."""
    g = WeightGraph(model.graph)
    done, weights = [], []
    for node in list(model.graph.node):
        if node.op_type != "MatMul" or node.name not in plans or node.name in exclude:
            continue
        w, quantized = plans[node.name]
        g.replace_node(node, [_nbits_node(g, node, w.shape[0], w.shape[1], quantized, opts)])
        done.append(node.name)
        weights.append(node.input[1])
    drop_initializers(model.graph, weights)
    if done:
        ensure_ms_domain(model)
    return done


def half_embedding_scales(model: onnx.ModelProto) -> int:
    """Store the scales of 4-bit embedding tables as float16 and Cast the looked-up rows back to float32.

    A 4-bit block of 32 values costs 16 bytes of data and 4 of float32 scale: the scales are a fifth of
    the table (0.7 MB of MiniLM's). Rows then dequantize in float16, whose rounding (~5e-4 relative) is far
    below the 4-bit step. Returns how many tables changed."""
    from onnx import TensorProto, helper, numpy_helper

    g = WeightGraph(model.graph)
    done = 0
    for node in list(model.graph.node):
        if node.op_type != "GatherBlockQuantized" or len(node.input) < 3:
            continue
        init = g.inits.get(node.input[2])
        if init is None or init.data_type != TensorProto.FLOAT or len(g.consumers.get(init.name, [])) != 1:
            continue
        scales = numpy_helper.to_array(init)
        if not np.all(np.isfinite(scales)) or float(np.abs(scales).max(initial=0.0)) > 6e4:
            continue
        init.CopyFrom(numpy_helper.from_array(scales.astype(np.float16), init.name))
        out = node.output[0]
        node.output[0] = g.fresh(out + "_fp16")
        cast = helper.make_node("Cast", [node.output[0]], [out], name=g.fresh(node.name + "_to_fp32"), to=TensorProto.FLOAT)
        model.graph.node.insert(list(model.graph.node).index(node) + 1, cast)
        done += 1
    return done


def model_sensitivity(model: onnx.ModelProto, plans: dict[str, tuple[np.ndarray, Quantized]],
                      feeds: Sequence[Feed]) -> dict[str, float]:
    """node name -> relative error of the model's float outputs on `feeds` when only that MatMul is 4-bit.

    The end-to-end ranking: a MatMul's local output error says little about how much of it survives the
    layers after it (LayerNorm, residuals, pooling). One session per planned MatMul, so only models
    protobuf can hold in memory and within MODEL_RANK_BUDGET (else {} and the local ranking is used).
    """
    import onnxruntime as ort
    from onnx import numpy_helper

    weight_bytes = sum(w.nbytes for w, _ in plans.values())
    if not feeds or onnx_io.needs_external_data(model) or weight_bytes * len(plans) > MODEL_RANK_BUDGET:
        return {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC

    def outputs() -> list[np.ndarray]:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        got = []
        for feed in feeds:
            got += [np.asarray(o, np.float64) for o in session.run(None, {k: v for k, v in feed.items() if k in wanted})]
        return got

    base = outputs()
    inits = {t.name: t for t in model.graph.initializer}
    weight_of = {n.name: n.input[1] for n in model.graph.node if n.name in plans}
    scores = {}
    for name, (w, quantized) in plans.items():
        init = inits[weight_of[name]]
        saved = type(init)()
        saved.CopyFrom(init)
        init.CopyFrom(numpy_helper.from_array(dequantized(w, quantized).astype(np.float32), init.name))
        try:
            got = outputs()
        finally:
            init.CopyFrom(saved)
        scores[name] = sum(float(np.sum((a - b) ** 2)) / max(float(np.sum(b**2)), 1e-30)
                           for a, b in zip(got, base) if np.issubdtype(b.dtype, np.floating))
    return scores


def calibration_inputs(model_path: Path, feeds: Sequence[Feed], count: int = 8) -> dict[str, np.ndarray]:
    """Each constant-weight MatMul's input rows on (up to `count`) calibration feeds, by node name."""
    weights = matmul_analysis.constant_matmul_weights(model_path)
    if not weights or not feeds:
        return {}
    xs = matmul_analysis.capture_inputs(model_path, list(weights), feeds[:count])
    return {name: xs[x] for name, (x, _) in weights.items() if x in xs}


def most_sensitive(
    model: onnx.ModelProto, plans: dict[str, tuple[np.ndarray, Quantized]], inputs: dict[str, np.ndarray],
    feeds: Sequence[Feed], opts: Int4Options, count: int,
) -> list[str]:
    """Names of the `count` planned MatMuls that 4 bits hurt most.

    rank=model: by the model's output error with only that MatMul 4-bit (`model_sensitivity`);
    rank=output: by the MatMul's own output error ||XW - XWq|| / ||XW|| on the calibration inputs X.
    Without calibration data the weight error alone ranks them.
    """
    if count <= 0:
        return []
    scores = model_sensitivity(model, plans, feeds) if opts.rank == "model" else {}
    for name, (w, quantized) in plans.items():
        if name in scores:
            continue
        deq, xs = dequantized(w, quantized), inputs.get(name)
        if xs is None:
            scores[name] = float(np.linalg.norm(deq - w)) / max(float(np.linalg.norm(w)), 1e-12)
            continue
        ref = xs @ w
        scores[name] = float(np.linalg.norm(xs @ deq - ref)) / max(float(np.linalg.norm(ref)), 1e-12)
    return sorted(scores, key=scores.get, reverse=True)[:count]  # type: ignore[arg-type]


def quantize(src: Path, dst: Path, ctx: StepContext, opts: Int4Options, step: str = STEP) -> StepResult:
    """4-bit weight-only quantization of `src` into `dst`."""
    prepared, notes = graph_tools.normalize_for_quant(Path(src), ctx.work_dir, step)
    wants_inputs = opts.activation_aware or opts.keep_int8 or opts.method == "gptq"
    inputs = calibration_inputs(prepared, ctx.calibration, opts.calib_feeds) if wants_inputs else {}
    model = onnx_io.read_model(prepared, step)
    resident = opts.int8_form == "resident" or (
        opts.int8_form == "auto" and weight_bytes(prepared) > RESIDENT_ABOVE_BYTES)
    try:
        hessians = {}
        if opts.method == "gptq":
            dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
            matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and _gptq_affordable(dims.get(n.input[1]))]
            hessians = input_hessians(model, matmuls, ctx.calibration[: opts.calib_feeds])
        plans = plan_matmuls(model, inputs, opts, hessians)
        keep = most_sensitive(model, plans, inputs, ctx.calibration[: opts.rank_feeds], opts, opts.keep_int8)
        # Never keep more than a third at int8, or small models would get (almost) no 4-bit MatMul at all.
        keep = keep[: len(plans) // 3]
        emb = []
        # A table whose row length the block does not divide (hidden 32, 48...) takes the largest that does.
        for emb_block in sorted({opts.emb_block, 32, 16}, reverse=True) if opts.embeddings else []:
            if emb_block <= opts.emb_block:
                emb += nbits.replace_gathers_4bit(model, emb_block, opts.symmetric, opts.search_clip)
        if emb and opts.emb_scales == "float16":
            half_embedding_scales(model)
        q4 = apply_plans(model, plans, opts, frozenset(keep))
        # The kept MatMuls of a large model stay int8 in memory: folded, a 0.5 B LM's kept LM head alone
        # widened to 545 MB of float32 at load and the process peaked at 2.8 GB (4x the all-4-bit model).
        # Accuracy level 4 (int8 activations): onnxruntime 1.32 has no float-activation kernel for 8 bits and
        # dequantizes the whole weight at every call (Qwen2.5-0.5B's LM head at one row: 402 ms vs 2.8 ms).
        n8 = len(nbits.replace_matmuls_nbits(model, 8, opts.block, True, RESIDENT_INT8_LEVEL, gemm=True)) \
            if resident else 0
        # What 4 bits skipped (sensitive MatMuls, Gemm, Conv, small tables) gets the int8-weight treatment.
        n8 += int8_rewrites.quantize_linear_weights(model)
        n8 += int8_rewrites.quantize_embeddings(model, "gather-mul")
    except (ValueError, KeyError, IndexError) as exc:
        raise ToolError(f"{step}: cannot rewrite the weights of {Path(src).name}: {first_line(exc)}") from exc
    if not q4 and not emb:  # an "int4" model with no 4-bit weight would be a mislabelled int8-weight one
        raise SlimserveError(f"{step} does not apply to {Path(src).name}: it has no MatMul with a constant 2-D "
                             "weight and no embedding table, so nothing can become 4-bit (onnxruntime has no "
                             "4-bit convolution)",
                             hint="use int8-weight, int8-dynamic or int8-static for convolutional models")
    onnx_io.save_model(model, Path(dst), step)
    graph_tools.check_session(Path(dst), step)
    notes += (
        (
            f"4-bit MatMulNBits block {opts.block} ({'symmetric' if opts.symmetric else 'asymmetric'}, {opts.method}, "
            f"accuracy_level {opts.accuracy_level}); {len(keep)} most sensitive MatMuls kept int8 "
            + (f"resident (MatMulNBits bits=8, accuracy_level {RESIDENT_INT8_LEVEL})" if resident
               else "(folded to float32 at load)")
        ),
    )
    return StepResult(
        path=Path(dst),
        notes=notes,
        details={"matmul_4bit": len(q4), "embeddings_4bit": len(emb), "int8": n8, "kept_int8": keep,
                 "int8_form": "resident" if resident else "fold"},
    )


def run(src: Path, dst: Path, ctx: StepContext, options: Int4Options) -> StepResult:
    """4-bit weights (the measured defaults unless the recipe sets options)."""
    with ctx.progress.stage(f"{STEP}: 4-bit block-quantized weights"):
        return quantize(Path(src), Path(dst), ctx, options)


SPEC = StepSpec(
    name=STEP,
    help="4-bit block-quantized MatMul weights (MatMulNBits, GPTQ-rounded on the calibration inputs) and "
    "embeddings (GatherBlockQuantized); the MatMuls whose 4 bits hurt the model most stay int8.",
    run=run,
    options=Int4Options,
)
