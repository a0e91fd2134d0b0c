"""Structured pruning that really shrinks shapes: FFN units and whole attention heads.

`prune-ffn-N` removes N% of the intermediate units of every transformer FFN block (columns of W1 and
its bias, rows of W2). `prune-heads-N` removes N% of the heads of every attention block (the head's
columns from Q, K, V and their biases, its rows from the output projection) and rewrites the shape
constants that spell the head count or the all-heads width. Both pick what to drop by an importance
score. With calibration feeds in the context the score is activation-aware (the spread of each unit's
or head's output on real tokens), the dropped units' mean output is folded into the next bias, and the
kept rows of W2 / Wo are refitted by ridge least squares to stand in for the dropped ones (one-shot,
layer-local; measured on MiniLM it roughly halves the fidelity loss). Without calibration the score is
weight magnitude and the kept weights are copied unchanged.
`sparsity-N` is the unstructured kind: it zeroes weights and changes no shape (see its notes).

Blocks are found by graph pattern, not by node names, on the graphs the optimum exporter writes for
BERT-like encoders (MatMul + Add projections, Reshape/Transpose head split, Softmax, Erf-GELU). Fused
graphs (com.microsoft Attention, SkipLayerNorm...) are not supported: prune before graph optimization.
The result is a plain fp32 graph with the same opset, inputs and outputs, ready for quantization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import onnx_io
from slimserve.optimizer.prune_blocks import find_attention_blocks, find_ffn_blocks, rewrite_shape_entry
from slimserve.optimizer.prune_graph import PruneGraph, infer_lengths, weight_of
from slimserve.optimizer.prune_refit import (
    collect_activations,
    ffn_scores,
    head_scores,
    keep_indices,
    shrink_down,
)

from .base import Feed, StepContext, StepResult, StepSpec, option, required

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

Score = Literal["auto", "magnitude", "activation"]


@dataclass(frozen=True)
class PruneOptions:
    percent: int = required("percent to remove, 1-99 (rounded per block)")
    score: Score = option(  # noqa: RUF009 - option() is dataclasses.field with help
        "auto", "importance: activation (needs calibration), magnitude, or auto (activation when there are "
        "calibration feeds)")

    def __post_init__(self) -> None:
        _check_percent(self.percent)


@dataclass(frozen=True)
class SparsityOptions:
    percent: int = required("percent of each weight matrix to zero, 1-99")

    def __post_init__(self) -> None:
        _check_percent(self.percent)


def _check_percent(value: int) -> None:
    if not 0 < value < 100:
        raise ValueError(f"the percentage must be between 1 and 99, got {value} "
                         "(0 would change nothing and 100 would remove everything)")


def _share(count: int, percent: int) -> int:
    """`percent`% of `count`, rounded half up (Python round() rounds 2.5 down to 2)."""
    return int(np.floor(count * percent / 100 + 0.5))


def _method(ctx: StepContext, score: Score) -> str:
    if score == "auto":
        return "activation" if ctx.calibration else "magnitude"
    if score == "activation" and not ctx.calibration:
        raise SlimserveError(
            "prune: activation-aware scoring needs calibration feeds", hint="pass an evaluation set"
        )
    return score


def _save(model: ModelProto, dst: Path) -> None:
    """Save through onnx_io, proving the pruned graph passes onnx.checker (before writing, when it fits)."""
    import onnx

    large = onnx_io.needs_external_data(model)
    try:
        if not large:
            onnx.checker.check_model(model)
        onnx_io.save_model(model, dst, "prune")
        if large:
            onnx.checker.check_model(str(dst))
    except onnx.checker.ValidationError as exc:
        raise ToolError(f"prune: the pruned graph fails onnx.checker: {first_line(exc)}") from exc


def _dummy_feeds(model: ModelProto) -> dict[str, np.ndarray]:
    """Small valid inputs for a smoke run: batch 2, 8 positions, token id 1, mask 1, type id 0."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else (2 if i == 0 else 8)
            for i, d in enumerate(ttype.shape.dim)
        ]
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        fill = 0 if "type" in value.name else 1
        feeds[value.name] = np.full(dims, fill, dtype=dtype)
    return feeds


def _smoke(original: bytes, pruned: ModelProto, feeds: Sequence[Feed]) -> None:
    """Run both models once and require the same output names and shapes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    feed = dict(feeds[0]) if feeds else _dummy_feeds(pruned)
    shapes = []
    for label, blob in (("original", original), ("pruned", pruned.SerializeToString())):
        try:
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
            wanted = {i.name for i in session.get_inputs()}
            outs = session.run(None, {k: v for k, v in feed.items() if k in wanted})
        except Exception as exc:
            raise ToolError(f"prune: onnxruntime cannot run the {label} model: {first_line(exc)}") from exc
        shapes.append([np.shape(o) for o in outs])
    if shapes[0] != shapes[1]:
        raise ToolError(f"prune: output shapes changed from {shapes[0]} to {shapes[1]}")


def prune_ffn(src: Path, dst: Path, ctx: StepContext, percent: int, score: Score = "auto") -> StepResult:
    """Remove `percent`% of the intermediate units of every FFN block; see the module docstring."""
    method = _method(ctx, score)
    model = onnx_io.read_model(src, "prune")
    original = model.SerializeToString()
    g = PruneGraph(model)
    with ctx.progress.stage("prune-ffn: find blocks"):
        blocks = find_ffn_blocks(g)
    if not blocks:
        raise SlimserveError(
            f"prune-ffn: no FFN blocks found in {Path(src).name} "
            "(looked for MatMul[H,I] -> elementwise activation -> MatMul[I,H] with constant weights)",
            hint="prune before fusing graph optimizations; only transformer encoders are supported",
        )
    with ctx.progress.stage("prune-ffn: score units"):
        acts = (
            collect_activations(g, [b.activation for b in blocks], ctx.calibration) if method == "activation" else None
        )
        scores = ffn_scores(g, blocks, acts)
    before, after = [], []
    with ctx.progress.stage("prune-ffn: slice weights", total=len(blocks)) as stage:
        for i, (block, score_vec) in enumerate(zip(blocks, scores)):
            drop = _share(block.width, percent)
            if drop == 0 or drop >= block.width:
                raise SlimserveError(
                    f"prune-ffn: {percent}% of {block.width} units rounds to {drop}, leaving nothing to do",
                    hint=f"use at least {int(np.ceil(50 / block.width))}% and less than 100%",
                )
            keep = keep_indices(score_vec, drop)
            g.replace_input(block.up, 1, weight_of(g, block.up)[:, keep], "pruned")
            shrink_down(g, block.down, keep, None if acts is None else acts[i])
            for node, index in block.vectors:
                value = g.const(node.input[index])
                assert value is not None  # found as a constant during tracing
                g.replace_input(
                    node, index, value.reshape(-1)[keep].reshape(value.shape[:-1] + (len(keep),)), "pruned"
                )
            before.append(block.width)
            after.append(len(keep))
            stage.advance()
    return _finish(
        g, original, model, ctx, dst, method,
        f"removed {percent}% of FFN units in {len(blocks)} blocks ({before[0]} -> {after[0]} per block)",
        magnitude="units chosen by weight magnitude (no calibration feeds given; activation-aware is better)",
        activation="units chosen by calibration activations; kept units refitted (ridge least squares) to stand in",
        details={"blocks": len(blocks), "score": method, "units_before": before, "units_after": after},
    )


def prune_heads(src: Path, dst: Path, ctx: StepContext, percent: int, score: Score = "auto") -> StepResult:
    """Remove `percent`% of the heads (whole heads) of every attention block; see the module docstring."""
    method = _method(ctx, score)
    model = onnx_io.read_model(src, "prune")
    original = model.SerializeToString()
    g = PruneGraph(model)
    with ctx.progress.stage("prune-heads: find blocks"):
        g.lengths = infer_lengths(model)
        blocks = find_attention_blocks(g)
    if not blocks:
        fused = sorted(
            {n.op_type for n in model.graph.node if n.op_type in ("Attention", "MultiHeadAttention")}
        )
        raise SlimserveError(
            f"prune-heads: no attention blocks found in {Path(src).name} "
            "(looked for MatMul+Add -> Reshape[.., heads, dim] for Q, K, V -> MatMul -> Softmax -> MatMul -> "
            "Reshape -> MatMul)" + (f"; the graph has fused {', '.join(fused)} ops" if fused else ""),
            hint="prune before fusing graph optimizations; only transformer encoders are supported",
        )
    with ctx.progress.stage("prune-heads: score heads"):
        acts = collect_activations(g, [b.context for b in blocks], ctx.calibration) if method == "activation" else None
        scores = head_scores(g, blocks, acts)
    before, after, kept_heads = [], [], []
    with ctx.progress.stage("prune-heads: slice weights", total=len(blocks)) as stage:
        for i, (block, score_vec) in enumerate(zip(blocks, scores)):
            drop = _share(block.heads, percent)
            if drop == 0 or drop >= block.heads:
                raise SlimserveError(
                    f"prune-heads: {percent}% of {block.heads} heads rounds to {drop} heads, "
                    "which is not a prune",
                    hint=f"with {block.heads} heads per layer use {int(np.ceil(50 / block.heads))}%..."
                    f"{int(np.floor(100 - 50 / block.heads))}%",
                )
            keep = keep_indices(score_vec, drop)
            d = block.head_dim
            cols = (keep[:, None] * d + np.arange(d)[None, :]).reshape(-1)
            width, new_heads = block.heads * d, len(keep)
            for proj in (block.q, block.k, block.v):
                w = weight_of(g, proj.matmul)
                g.replace_input(proj.matmul, 1, w[:, cols], "pruned")
                for node, index in proj.vectors:
                    value = g.const(node.input[index])
                    assert value is not None  # found as a constant during tracing
                    if value.shape[-1] != width or value.size != width:
                        raise SlimserveError(
                            f"prune-heads: unexpected per-channel constant of shape {list(value.shape)} "
                            f"in a projection of width {width}",
                            hint="this attention pattern is not supported",
                        )
                    g.replace_input(
                        node,
                        index,
                        value.reshape(-1)[cols].reshape(value.shape[:-1] + (len(cols),)),
                        "pruned",
                    )
                rewrite_shape_entry(g, proj.split, 1, -2, block.heads, new_heads)
            rewrite_shape_entry(g, block.merge, 1, -1, width, new_heads * d)
            shrink_down(g, block.out, cols, None if acts is None else acts[i])
            before.append(block.heads)
            after.append(new_heads)
            kept_heads.append([int(k) for k in keep])
            stage.advance()
    return _finish(
        g, original, model, ctx, dst, method,
        f"removed {before[0] - after[0]} of {before[0]} heads in each of {len(blocks)} attention blocks",
        magnitude="heads chosen by weight magnitude (no calibration feeds given; activation-aware is better)",
        activation="heads chosen by calibration activations; output projection refitted (ridge least squares)",
        details={
            "blocks": len(blocks),
            "score": method,
            "heads_before": before,
            "heads_after": after,
            "kept": kept_heads,
        },
    )


def _finish(g: PruneGraph, original: bytes, model: ModelProto, ctx: StepContext, dst: Path, method: str,
            summary: str, *, magnitude: str, activation: str, details: dict[str, Any]) -> StepResult:
    """Shared tail of the structured steps: drop dead nodes, prove the graph still runs, save, explain."""
    g.sweep()
    _smoke(original, model, ctx.calibration)
    _save(model, dst)
    how = magnitude if method == "magnitude" else activation
    return StepResult(path=Path(dst), notes=(summary, how), details=details)


def sparsify(src: Path, dst: Path, ctx: StepContext, percent: int) -> StepResult:
    """Zero the `percent`% smallest-magnitude entries of every constant MatMul/Gemm weight (per tensor)."""
    model = onnx_io.read_model(src, "prune")
    original = model.SerializeToString()
    g = PruneGraph(model)
    targets: list[tuple[NodeProto, int]] = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
            value = g.const(node.input[1])
            if value is not None and value.ndim == 2 and value.dtype == np.float32 and value.size > 1:
                targets.append((node, 1))
    if not targets:
        raise SlimserveError(
            f"sparsity: no float MatMul/Gemm weights found in {Path(src).name}", hint="nothing to sparsify"
        )
    zeroed = total = 0
    for node, index in targets:
        value = g.const(node.input[index])
        assert value is not None
        k = _share(value.size, percent)
        if k == 0:
            continue
        threshold = np.partition(np.abs(value).reshape(-1), k - 1)[k - 1]
        sparse = np.where(np.abs(value) <= threshold, np.float32(0), value)
        zeroed += int((sparse == 0).sum())
        total += value.size
        g.replace_input(node, index, sparse, "sparse")
    g.sweep()
    _smoke(original, model, ctx.calibration)
    _save(model, dst)
    return StepResult(
        path=Path(dst),
        notes=(
            f"zeroed {zeroed} of {total} MatMul/Gemm weights ({percent}% per tensor, by magnitude)",
            (
                "unstructured sparsity shrinks only the zipped size: model.onnx bytes, memory and latency "
                "stay the same (onnxruntime has no sparse kernels for these dense tensors)"
            ),
        ),
        details={"zeroed": zeroed, "weights": total},
    )


def _run_ffn(src: Path, dst: Path, ctx: StepContext, options: PruneOptions) -> StepResult:
    return prune_ffn(src, dst, ctx, options.percent, options.score)


def _run_heads(src: Path, dst: Path, ctx: StepContext, options: PruneOptions) -> StepResult:
    return prune_heads(src, dst, ctx, options.percent, options.score)


def _run_sparsity(src: Path, dst: Path, ctx: StepContext, options: SparsityOptions) -> StepResult:
    return sparsify(src, dst, ctx, options.percent)


SPECS: tuple[StepSpec[Any], ...] = (
    StepSpec(
        name="prune-ffn",
        help="remove N% of the FFN intermediate units in every transformer layer (really smaller weights)",
        run=_run_ffn,
        options=PruneOptions,
        argument="percent",
    ),
    StepSpec(
        name="prune-heads",
        help="remove N% of the attention heads in every layer, rounded to whole heads (smaller weights)",
        run=_run_heads,
        options=PruneOptions,
        argument="percent",
    ),
    StepSpec(
        name="sparsity",
        help="zero the N% smallest weights: shrinks the zipped size only, not model bytes or latency",
        run=_run_sparsity,
        options=SparsityOptions,
        argument="percent",
    ),
)
