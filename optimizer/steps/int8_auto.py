"""Step `int8`: the recommended int8 recipe, chosen by what the user values and the CPU it will run on.

`int8(priority=fidelity|latency|memory, cpu=TARGET)` (`optimize --cpu` sets cpu; optimizer/isa.py names
the targets; the default target is the build machine's architecture at its baseline, x86-64-avx2 on x86-64,
never the build machine's own extensions):

- fidelity (the default): builds int8-weight and int8-dynamic, runs both and the float32 input on the
  calibration feeds, and keeps the one whose outputs are closest (mean per-sample cosine, then worst
  sample). Without calibration feeds it takes int8-weight, the most faithful on every model measured so far.
  A model over 1 GiB of float32 weights (a language model) takes int8-resident at accuracy level 4 instead:
  int8-weight widens its weights back to float32 at load (a 0.5 B model peaked at 7.3 GB), int8-resident
  keeps them int8 (level 0 would decode 13x slower than float32: see RESIDENT_INT8_LEVEL).
- memory: int8-resident for the target (weights stay int8 in memory: about half int8-weight's peak RSS;
  accuracy level 4 where the target has integer dot products, else 0 with int8-weight's fidelity).
- latency, by the target: with integer dot products (VNNI, AMX, arm64 dotprod/i8mm) int8-resident at
  accuracy level 4 (MiniLM on AVX-512 VNNI: 2.0 ms at batch 1, the fastest int8, vs 2.2 ms int8-dynamic and
  6.2 ms int8-weight; 12.2 vs 10.6 ms at batch 8; mean cosine 0.9995 vs 0.9946; benchmarks/results/
  int8_resident.md); on plain AVX2 int8-dynamic, the only int8 faster than float32 there (0-24%, issue 14;
  MatMulNBits is 1.7x slower than float32 at level 4, 3.8x at level 0).

Measured on all-MiniLM-L6-v2 against the PyTorch model (161 eval texts; benchmarks/results/quant_sweep.md),
all three int8 recipes land at the same size (~23 MB, about 4x smaller than float32):

    int8-weight   mean cosine 0.9998, min 0.9991   float32 compute: warm latency = float32
    int8-dynamic  mean cosine 0.9960, min 0.977    integer matmuls: 1.56x faster warm on this VNNI CPU
    int8-static   mean cosine 0.9955, min 0.958    fixed activation ranges; needs calibration; ~1.05x

int8-static is left out of the choice: it needs calibration, is never the most faithful here, and takes
longest to build. On MiniLM the choice is int8-weight, the only int8 recipe that keeps every eval text
above cosine 0.995; its speed does not depend on VNNI (it computes in float32). Its cost is memory: ORT
expands the int8 weights to float32 at load (~90 MB resident for MiniLM). Pick int8-dynamic explicitly when
warm latency matters more than the last 0.004 of cosine and the target CPU has VNNI (or arm64 dot product).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimserve.errors import SlimserveError
from slimserve.optimizer import isa
from slimserve.optimizer.onnx_io import model_files
from slimserve.optimizer.step_cache import run_step
from slimserve.optimizer.steps import int8_dynamic, int8_weight
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option

CANDIDATES = (int8_weight, int8_dynamic)
MAX_FEEDS = 32  # enough to rank two methods whose gap is measured in thousandths; bounds the step's time
# Above this many bytes of float32 weights, int8-weight's fold back to float32 at load costs more memory than
# a serverless function affords (a 0.5 B LM: 7.3 GB peak at load, benchmarks/results/generation_lm.md), so
# the fidelity priority takes int8-resident: the same int8 rounding, the weights kept int8 in memory.
RESIDENT_ABOVE_BYTES = 1 << 30
# The accuracy level of 8-bit MatMulNBits chosen for a model that size. A model over 1 GiB is a language
# model, run one token at a time, and at one row onnxruntime 1.32's 8-bit float-activation path (level 0)
# dequantizes the whole weight per call: Qwen2.5-0.5B decoded 1.5 tokens/s at level 0, 13x slower than
# float32 (benchmarks/results/generation_lm.md); level 4 (int8 activations) has kernels on AVX2, VNNI
# and arm64 alike and was faster than float32 (its LM head at one row: 2.8 ms vs 8.6 ms float32 vs 402 ms
# at level 0, benchmarks/results/matmulnbits_decode.md).
RESIDENT_INT8_LEVEL: Literal[4] = 4


@dataclass(frozen=True)
class Int8Options:
    """What `int8` optimizes for, and for which CPU."""

    priority: Literal["fidelity", "latency", "memory"] = option(
        "fidelity", "fidelity: the more faithful of int8-weight and int8-dynamic on this model; memory: "
        "int8-resident (int8 weights resident); latency: int8-resident at accuracy level 4 on CPUs with "
        "integer dot products, int8-dynamic on plain AVX2")
    cpu: isa.CpuTarget | None = option(  # noqa: RUF009 - option() is dataclasses.field with help
        None, "target CPU (optimize --cpu sets it); none = the build machine's architecture at its baseline")


def _delegate(spec: StepSpec[Any], options: Any, src: Path, dst: Path, ctx: StepContext, why: str) -> StepResult:
    """`int8` = one other step, built (or taken from the cache) and recorded as the delegate."""
    result = run_step(spec, options, src, dst, ctx)
    return StepResult(path=result.path, details={**result.details, "delegate": spec.name},
                      notes=(f"int8 = {spec.name} ({why})", *result.notes))


def _outputs(path: Path, feeds: Sequence[Feed]) -> list[np.ndarray]:
    """Every output of the model, flattened and side by side, one row per sample."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4  # our one error line says it (see cli.quiet_onnxruntime)
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    rows = []
    for feed in feeds:
        values = session.run(None, {k: v for k, v in feed.items() if k in names})
        rows.append(np.concatenate([np.asarray(v, np.float64).reshape(len(v), -1) for v in values], axis=1))
    return rows


def _score(reference: list[np.ndarray], candidate: list[np.ndarray]) -> tuple[float, float]:
    from slimserve.optimizer.fidelity import per_sample_cosine

    cos = np.concatenate([per_sample_cosine(r, c) for r, c in zip(reference, candidate)])  # feeds differ in length
    return float(cos.mean()), float(cos.min())


def weight_bytes(src: Path) -> int:
    """The model's bytes with its external data (0 when it cannot be read: the step that reads it says why)."""
    try:
        return sum(p.stat().st_size for p in model_files(src))
    except (SlimserveError, OSError):
        return 0


def run(src: Path, dst: Path, ctx: StepContext, options: Int8Options) -> StepResult:
    """By priority: memory and latency delegate to one step; fidelity builds each candidate beside `dst`
    (or takes it from `ctx.cache`) and keeps the most faithful on this model's calibration feeds."""
    opts = options if isinstance(options, Int8Options) else Int8Options()  # NoOptions from older callers
    target = isa.resolve(opts.cpu)
    if opts.priority == "memory":
        return _delegate(int8_weight.RESIDENT_SPEC, int8_weight.Int8ResidentOptions(cpu=opts.cpu), src, dst, ctx,
                         f"priority memory: int8 weights stay int8 in memory on {target}")
    if opts.priority == "latency" and isa.has_integer_dot(target):
        return _delegate(int8_weight.RESIDENT_SPEC, int8_weight.Int8ResidentOptions(cpu=opts.cpu), src, dst, ctx,
                         f"priority latency on {target}: int8 activations on integer dot products, the fastest "
                         "int8 at batch 1 measured there and more faithful than int8-dynamic")
    if opts.priority == "latency":
        return _delegate(int8_dynamic.SPEC, int8_dynamic.SPEC.options(), src, dst, ctx,
                         f"priority latency on {target}: without integer dot products only int8-dynamic's "
                         "integer matmuls beat float32")
    weights = weight_bytes(Path(src))
    if weights > RESIDENT_ABOVE_BYTES:
        return _delegate(int8_weight.RESIDENT_SPEC,
                         int8_weight.Int8ResidentOptions(cpu=opts.cpu, accuracy_level=RESIDENT_INT8_LEVEL), src, dst,
                         ctx, f"{weights / 2**30:.1f} GiB of float32 weights: int8-weight would widen them back to "
                         f"float32 when the session loads; int8-resident keeps them int8, on {target}, at accuracy "
                         "level 4 (at level 0 a token-by-token decode dequantizes every weight per call)")
    feeds = list(ctx.calibration)[:MAX_FEEDS]
    if not feeds:
        return _delegate(int8_weight.SPEC, int8_weight.Int8WeightOptions(), src, dst, ctx,
                         "no calibration inputs to compare methods on")
    built: dict[str, StepResult] = {}
    errors: dict[str, SlimserveError] = {}
    for module in CANDIDATES:
        work = ctx.work_dir / module.STEP
        work.mkdir(parents=True, exist_ok=True)
        sub = StepContext(work_dir=work, calibration=ctx.calibration, progress=ctx.progress, cache=ctx.cache)
        try:
            built[module.STEP] = run_step(module.SPEC, module.SPEC.options(), src, work / "model.onnx", sub)
        except SlimserveError as exc:  # one method may not apply to this graph; the other may
            errors[module.STEP] = exc
    if not built:
        raise next(iter(errors.values()))  # same error (and type) the first method gave
    reference = _outputs(Path(src), feeds)
    scored = {name: (result, _score(reference, _outputs(result.path, feeds))) for name, result in built.items()}
    failures = {name: exc.message for name, exc in errors.items()}
    order = [m.STEP for m in CANDIDATES]
    # Rank on the reported (rounded) scores; a tie goes to the earlier candidate (int8-weight).
    best = max(scored, key=lambda name: (round(scored[name][1][0], 6), round(scored[name][1][1], 6),
                                         -order.index(name)))
    result, (mean, _) = scored[best]
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    for path in model_files(result.path):  # the model and any external data it references
        shutil.copyfile(path, Path(dst).parent / (Path(dst).name if path == result.path else path.name))
    scores = {name: {"mean": round(s[0], 6), "min": round(s[1], 6)} for name, (_, s) in scored.items()}
    others = ", ".join(f"{n} {s['mean']:.4f}" for n, s in scores.items() if n != best)
    note = f"int8 = {best}: closest to float32 on {len(feeds)} calibration samples (mean cosine {mean:.4f}" + \
        (f"; {others})" if others else ")")
    details: dict[str, Any] = {**result.details, "delegate": best, "candidates": scores, "failed": failures}
    return StepResult(path=Path(dst), notes=(note, *result.notes), details=details)


SPEC = StepSpec(
    name="int8",
    help="Recommended int8 by priority and target CPU: fidelity (default) keeps the more faithful of "
    "int8-weight and int8-dynamic on this model's calibration inputs (int8-weight on MiniLM); memory = "
    "int8-resident; latency = int8-resident (level 4) with VNNI/arm64 dot product, int8-dynamic on AVX2. "
    "int8(priority=memory,cpu=x86-64-avx512-vnni).",
    run=run,
    options=Int8Options,
)
