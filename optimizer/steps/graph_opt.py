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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slimserve.optimizer.graph_tools import check_session, ort_optimize
from slimserve.optimizer.steps.base import StepContext, StepResult, StepSpec, option


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


SPEC = StepSpec(
    name="fp32",
    help="ONNX Runtime graph optimization (portable extended level) saved offline; weights stay float32.",
    run=run,
    options=GraphOptOptions,
)
