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
ConstantFolding stays off offline: int8-weight's folded form (int8 x fp16 scales via Cast/Mul, used for
the MatMuls int8-dynamic/static keep out of integer compute) would be folded into float32 in the file
(MiniLM int8-dynamic grew 23.2 -> 33.6 MB: +14.2 MB of float32 for 3.5 MB of int8). The quantizers'
input was already constant-folded (graph_tools.normalize_for_quant); at load, basic folds those weights
in memory exactly as ALL did, so outputs are identical and the file stays int8-sized.
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

# The level a pre-optimized file loads at. Not DISABLE_ALL: constant folding must still widen the folded
# int8 weights (without it onnxruntime's outputs changed on MiniLM int8-dynamic, max |diff| 0.16).
LOAD_LEVEL = "basic"
# What preoptimize saves: portable, without constant folding (see the module docstring).
OFFLINE_LEVEL = "extended"
OFFLINE_DISABLED = ("ConstantFolding",)
MAX_GROWTH = 1.02  # a re-optimized file larger than this (ratio) is not shipped
CHECK_FEEDS = 8
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


def preoptimize(src: Path, dst: Path, feeds: Sequence[Feed], tolerance: float = 1e-6
                ) -> tuple[Path, str | None, tuple[str, ...]]:
    """`src` re-optimized offline (OFFLINE_LEVEL, no constant folding) into `dst` when that is safe:
    returns (the file to ship, the load level to record or None, notes).

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
    try:
        ort_optimize(src, dst, "preoptimize", OFFLINE_LEVEL, OFFLINE_DISABLED)
    except SlimserveError as exc:
        return src, None, (diagnostic(f"not re-optimized offline ({exc.message})"),)
    if onnx_io.external_data_files(onnx_io.load_onnx(dst)):
        return src, None, (diagnostic("not re-optimized offline: onnxruntime wrote external data"),)
    model = onnx.load(str(dst), load_external_data=False)
    if any(n.name.startswith(_INSERTED) for n in model.graph.node):
        return src, None, (diagnostic("not re-optimized offline: onnxruntime inserted casts for this CPU's kernels"),)
    before, after = src.stat().st_size, dst.stat().st_size
    if after > before * MAX_GROWTH:
        return src, None, (diagnostic(f"not re-optimized offline: the file grew {before} -> {after} bytes"),)
    checked = list(feeds[:CHECK_FEEDS])
    if not checked:
        return src, None, (diagnostic("not re-optimized offline: no inputs to prove the outputs unchanged"),)
    try:
        difference = _max_difference(_outputs(src, "all", checked), _outputs(dst, LOAD_LEVEL, checked))
    except Exception as exc:  # noqa: BLE001 - any failure means: ship the file as it was
        return src, None, (diagnostic(f"not re-optimized offline: the re-optimized file fails ({exc})"),)
    if difference > tolerance:
        return src, None, (diagnostic(f"not re-optimized offline: outputs moved by {difference:.2g}"),)
    note = (f"graph re-optimized offline after the last step (onnxruntime {OFFLINE_LEVEL}, without constant "
            f"folding; {before} -> {after} bytes, outputs unchanged): the handler loads it at the "
            f"{LOAD_LEVEL} level, so cold starts skip the fusions")
    return dst, LOAD_LEVEL, (diagnostic(note),)


SPEC = StepSpec(
    name="fp32",
    help="ONNX Runtime graph optimization (portable extended level) saved offline; weights stay float32.",
    run=run,
    options=GraphOptOptions,
)
