"""Step `int8`: the recommended int8 recipe, which is int8-weight.

Measured on all-MiniLM-L6-v2 against the PyTorch model (161 eval texts; benchmarks/results/quant_sweep.md),
all three int8 recipes land at the same size (~23 MB, about 4x smaller than float32):

    int8-weight   mean cosine 0.9998, min 0.9991   float32 compute: warm latency = float32
    int8-dynamic  mean cosine 0.9960, min 0.977    integer matmuls: 1.56x faster warm on this VNNI CPU
    int8-static   mean cosine 0.9955, min 0.958    fixed activation ranges; needs calibration; ~1.05x

Fidelity comes first for the default, so `int8` delegates to int8-weight: it is the only int8 recipe
that keeps every eval text above cosine 0.995; it needs no calibration and its speed does not depend on
VNNI (it runs at float32 speed). Its cost is memory: ORT expands the int8 weights to float32 at load
(~90 MB resident for MiniLM) and loads ~25 ms slower than int8-dynamic (still faster than float32). Pick int8-dynamic explicitly when warm latency matters more than the last
0.004 of cosine and the target CPU has VNNI (or arm64 dot-product instructions).
"""

from __future__ import annotations

from pathlib import Path

from slimserve.optimizer.steps import int8_weight
from slimserve.optimizer.steps.base import StepContext, StepResult, StepSpec


def run(src: Path, dst: Path, ctx: StepContext, argument: str | None) -> StepResult:
    """Delegate to int8-weight (see module docstring for the measured reason)."""
    result = int8_weight.run(src, dst, ctx, argument)
    return StepResult(
        path=result.path,
        notes=("int8 = int8-weight (best measured fidelity at int8 size)", *result.notes),
        details={**result.details, "delegate": int8_weight.STEP},
    )


SPEC = StepSpec(
    name="int8",
    help="Recommended int8: currently int8-weight (int8 weights and embeddings, float compute), the most "
    "faithful int8 recipe measured on MiniLM.",
    run=run,
)
