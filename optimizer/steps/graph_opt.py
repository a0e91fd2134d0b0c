"""Step `fp32`: ONNX Runtime graph optimization only, saved offline so cold starts skip the work.

Level chosen: ORT_ENABLE_EXTENDED, measured on all-MiniLM-L6-v2 (benchmarks/results/quant_sweep.md).
Why not the others:
- BASIC only folds constants and removes redundant nodes; EXTENDED adds the fusions that matter for
  encoders (SkipLayerNormalization, BiasGelu, FusedMatMul, attention). They are com.microsoft contrib ops
  that every stock onnxruntime CPU build implements on x86_64 and arm64, so the saved file is portable
  across the two Lambda architectures.
- ALL adds layout transforms (NCHWc, blocked for the build machine's SIMD width) that ORT documents as
  hardware-specific when saved offline: a file made on an AVX-512 build host can be wrong or slow on a
  Graviton. We never save that level.

`preoptimize` is the same idea for every recipe's final model (optimize.run_recipe calls it after the
last step): quantizers write graphs onnxruntime would otherwise fuse again at every cold start
(DynamicQuantizeLinear + MatMulInteger -> MatMulIntegerToFloat / DynamicQuantizeMatMul, Erf -> Gelu,
QDQ -> integer ops). The saved file then loads at `LOAD_LEVEL` (basic), recorded in the manifest as
runtime.session.graph_optimization_level and read by model_runtime.session_options; a manifest without
the key loads at ALL as before. Measured on MiniLM int8-dynamic (benchmarks/results/coldstart_levers.md).
Why the file does not grow: onnxruntime's constant folding turns int8-weight's folded form (int8 x fp16
scales via Cast/Mul, also used for the MatMuls int8-dynamic/static keep out of integer compute) into
float32 initializers (MiniLM int8-dynamic grew 23.2 -> 33.6 MB: +14.2 MB of float32 for 3.5 MB of int8).
So we fold and fuse exactly as the handler did at load, then put back every constant subgraph that
folding widened (`unfold_widened`): the file stays int8-sized, and at load the basic level folds those
weights again into the same float32 values, giving the graph the handler built from the unfused file
(MiniLM int8-dynamic: identical outputs on every eval text). Switching ConstantFolding off offline instead
also gave identical outputs on MiniLM, but fusions that need a constant weight would then differ from
what the handler built; folding and restoring reproduces the load-time graph by construction.
The fusing runs on the file as shipped, without the quantizer's inferred shapes (`without_inferred_shapes`):
with them ORT fused six SkipLayerNormalizations it never fuses at load (batch-1 embeddings moved by up to
0.013 through dynamic int8's rounding, ~10% slower warm).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slimserve.notes import diagnostic
from slimserve.optimizer.graph_tools import check_session, ort_optimize
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option

# The level a pre-optimized file loads at. Not DISABLE_ALL: constant folding must widen the restored int8
# weights again (without it onnxruntime's outputs changed on MiniLM int8-dynamic, max |diff| 0.16).
LOAD_LEVEL = "basic"
# What preoptimize saves: portable (see the module docstring).
OFFLINE_LEVEL = "extended"
MAX_GROWTH = 1.02  # a re-optimized file larger than this (ratio) is not shipped
CHECK_FEEDS = 32  # batch-1 feeds: dynamic int8 turns a one-ulp change into a visible one on some texts
WIDENED = 2.0  # a folded initializer this many times larger than the constants it came from is put back
# Nodes onnxruntime inserts for the build machine's kernels (float16 ops without a CPU kernel get Casts
# around them): saved offline they would pin the build host's kernel set, so such a result is not used.
_INSERTED = ("InsertedPrecisionFreeCast", "InsertedCast")


@dataclass(frozen=True)
class GraphOptOptions:
    level: Literal["basic", "extended"] = option(
        "extended", "ORT graph optimization level saved offline (both portable; 'all' is hardware-specific)")


def run(src: Path, dst: Path, ctx: StepContext, options: GraphOptOptions) -> StepResult:
    """Optimize the graph with ORT at a portable level, extended by default (see the module docstring)."""
    level = options.level
    with ctx.progress.stage(f"fp32: onnxruntime {level} graph optimization"):
        ort_optimize(Path(src), Path(dst), "fp32", level)
        check_session(Path(dst), "fp32")
    before, after = os.path.getsize(src), os.path.getsize(dst)
    notes = (
        (
            f"onnxruntime {level}-level optimizations saved offline; fused com.microsoft ops need "
            "onnxruntime (not another runtime) to load the file"
        ),
    )
    return StepResult(
        path=Path(dst), notes=notes, details={"level": level, "bytes_in": before, "bytes_out": after}
    )


def _signed_qdq(path: Path) -> bool:
    """True when the graph has int8 (signed) Quantize/DequantizeLinear: onnxruntime fuses those QDQ groups
    on arm64 but not on x86-64 (QDQIsInt8Allowed is a compile-time choice), so fusing them offline on the
    build machine would pin its architecture's choice."""
    import onnx

    from slimserve.optimizer import onnx_io

    model = onnx_io.read_model(path, "preoptimize", with_data=False)
    types = {t.name: t.data_type for t in model.graph.initializer}
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2
               and types.get(node.input[2]) == onnx.TensorProto.INT8 for node in model.graph.node)


def _outputs(path: Path, level: str, feeds: Sequence[Feed]) -> list[Any]:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level.upper()}")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [np.asarray(o) for feed in feeds for o in session.run(None, {k: v for k, v in feed.items() if k in names})]


def _max_difference(ref: list[Any], new: list[Any]) -> float:
    """The largest absolute difference relative to the reference's scale (exact for non-float outputs)."""
    import numpy as np

    worst = 0.0
    for a, b in zip(ref, new, strict=True):
        if a.shape != b.shape:
            return float("inf")
        if a.size == 0:
            continue
        if not np.issubdtype(a.dtype, np.floating):
            worst = max(worst, 0.0 if np.array_equal(a, b) else float("inf"))
            continue
        scale = max(1.0, float(np.abs(a).max()))
        worst = max(worst, float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) / scale)
    return worst


def unfold_widened(source: Any, optimized: Any) -> int:
    """Put back in `optimized` the constant subgraphs of `source` that onnxruntime folded into initializers
    at least WIDENED times larger (int8 weights widened to float32); returns how many. In place.

    A folded initializer keeps the name of the node output it replaced, so its subgraph is found in
    `source` by that name: nodes whose inputs lead only to initializers. Their nodes and initializers are
    copied back (prepended: they depend on initializers only); a name clash leaves that tensor folded.
    """
    from onnx import numpy_helper

    src_graph, graph = source.graph, optimized.graph
    producers = {o: n for n in src_graph.node for o in n.output if o}
    src_inits = {t.name: t for t in src_graph.initializer}
    names = ({o for n in graph.node for o in n.output} | {i.name for i in graph.input}
             | {n.name for n in graph.node})
    have = {t.name: t for t in graph.initializer}

    def constant_subgraph(name: str) -> tuple[list[Any], set[str]] | None:
        nodes: list[Any] = []
        leaves: set[str] = set()
        stack, seen = [name], set()
        while stack:
            current = stack.pop()
            if current in seen or not current:
                continue
            seen.add(current)
            if current in src_inits:
                leaves.add(current)
                continue
            node = producers.get(current)
            if node is None or node.attribute and any(a.g.node or a.graphs for a in node.attribute):
                return None  # a graph input, or control flow
            nodes.append(node)
            stack.extend(node.input)
        return nodes, leaves

    restored, new_nodes, new_inits = 0, list[Any](), list[Any]()
    for tensor in list(graph.initializer):
        if tensor.name not in producers:
            continue
        found = constant_subgraph(tensor.name)
        if found is None:
            continue
        nodes, leaves = found
        leaf_bytes = sum(numpy_helper.to_array(src_inits[n]).nbytes for n in leaves)
        if numpy_helper.to_array(tensor).nbytes < WIDENED * max(1, leaf_bytes):
            continue
        outputs = {o for n in nodes for o in n.output if o} - {tensor.name}
        clash = (outputs | {n.name for n in nodes}) & names or {
            n for n in leaves if n in have and have[n] != src_inits[n]}
        if clash:
            continue
        graph.initializer.remove(tensor)
        for node in reversed(nodes):  # producers were collected consumer-first
            if not any(node is m for m in new_nodes):
                new_nodes.append(node)
        for leaf in sorted(leaves):
            if leaf not in have:
                new_inits.append(src_inits[leaf])
                have[leaf] = src_inits[leaf]
        names |= outputs | {n.name for n in nodes}
        restored += 1
    if restored:
        order = {id(n): i for i, n in enumerate(src_graph.node)}  # the source's order is topological
        new_nodes.sort(key=lambda n: order[id(n)])
        kept = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + kept)
        graph.initializer.extend(new_inits)
    return restored


def without_inferred_shapes(src: Path, original: Path, dst: Path) -> Path:
    """A copy of `src` keeping only the top-level value_info `original` has (what the handler's file keeps,
    optimize.drop_inferred_value_info). The quantizers' shape inference writes shapes that hold for the
    sizes it saw; onnxruntime's fusions read them (with them it fuses Add+LayerNormalization into
    SkipLayerNormalization on MiniLM, which it does not do on the shipped file), so fusing offline on them
    would build another graph than the one the handler built, one that may hold only for those sizes."""
    import onnx

    from slimserve.optimizer import onnx_io

    keep = {v.name for v in onnx_io.load_onnx(original).graph.value_info}
    model = onnx.load(str(src))
    kept = [v for v in model.graph.value_info if v.name in keep]
    if len(kept) == len(model.graph.value_info):
        return src
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    onnx.save_model(model, str(dst))
    return dst


def preoptimize(src: Path, dst: Path, feeds: Sequence[Feed], tolerance: float = 1e-6, original: Path | None = None
                ) -> tuple[Path, str | None, tuple[str, ...]]:
    """`src` re-optimized offline (OFFLINE_LEVEL, widened constants put back) into `dst` when that is safe:
    returns (the file to ship, the load level to record or None, notes). `original` is the exported model,
    whose shape annotations are the only ones kept (see without_inferred_shapes).

    Safe means: no arch-dependent QDQ fusion, no kernel-specific Casts inserted, the file not larger by more
    than MAX_GROWTH, and on the first CHECK_FEEDS feeds the new file loaded at LOAD_LEVEL gives the outputs
    `src` gives loaded at ALL (today's handler) within `tolerance` of the outputs' scale. Otherwise `src`
    ships as it was, loaded at ALL, and a diagnostic note says why.
    """
    import onnx

    from slimserve.errors import SlimserveError
    from slimserve.optimizer import onnx_io

    src, dst = Path(src), Path(dst)
    if onnx_io.external_data_files(onnx_io.load_onnx(src)):
        return src, None, (diagnostic("not re-optimized offline: weights in external data files"),)
    if _signed_qdq(src):
        return src, None, (diagnostic("not re-optimized offline: int8 QDQ fusion differs between x86-64 and arm64"),)
    plain = src if original is None else without_inferred_shapes(src, Path(original), dst.with_name(dst.stem + "-in.onnx"))
    fused = dst.with_name(dst.stem + "-fused.onnx")
    try:
        ort_optimize(plain, fused, "preoptimize", OFFLINE_LEVEL)
    except SlimserveError as exc:
        return src, None, (diagnostic(f"not re-optimized offline ({exc.message})"),)
    if onnx_io.external_data_files(onnx_io.load_onnx(fused)):
        return src, None, (diagnostic("not re-optimized offline: onnxruntime wrote external data"),)
    model = onnx.load(str(fused))
    if any(n.name.startswith(_INSERTED) for n in model.graph.node):
        return src, None, (diagnostic("not re-optimized offline: onnxruntime inserted casts for this CPU's kernels"),)
    restored = unfold_widened(onnx.load(str(src)), model)
    onnx.save_model(model, str(dst))
    fused.unlink()
    before, after = src.stat().st_size, dst.stat().st_size
    if after > before * MAX_GROWTH:
        return src, None, (diagnostic(f"not re-optimized offline: the file grew {before} -> {after} bytes"),)
    checked = list(feeds[:CHECK_FEEDS])
    if not checked:
        return src, None, (diagnostic("not re-optimized offline: no inputs to prove the outputs unchanged"),)
    try:
        difference = _max_difference(_outputs(plain, "all", checked), _outputs(dst, LOAD_LEVEL, checked))
    except Exception as exc:  # noqa: BLE001 - any failure means: ship the file as it was
        return src, None, (diagnostic(f"not re-optimized offline: the re-optimized file fails ({exc})"),)
    if difference > tolerance:
        return src, None, (diagnostic(f"not re-optimized offline: outputs moved by {difference:.2g}"),)
    note = (f"graph re-optimized offline after the last step (onnxruntime {OFFLINE_LEVEL}, {restored} compact weights "
            f"left unfolded; {before} -> {after} bytes, outputs unchanged): the handler loads it "
            f"at the {LOAD_LEVEL} level, so cold starts skip the fusions")
    return dst, LOAD_LEVEL, (diagnostic(note),)


SPEC = StepSpec(
    name="fp32",
    help="ONNX Runtime graph optimization (portable extended level) saved offline; weights stay float32.",
    run=run,
    options=GraphOptOptions,
)
