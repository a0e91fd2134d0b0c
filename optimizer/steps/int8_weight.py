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

Step `int8-resident` (= int8-weight(matmul=nbits) with the accuracy level chosen for the target CPU): the
MatMul weights stay int8 in memory as MatMulNBits bits=8 (block 32), so the session does not hold a float32
copy. Measured on all-MiniLM-L6-v2 (benchmarks/results/int8_resident.md): peak RSS 103-107 MB, 0.47x
int8-weight's, cold-start CPU 0.7x, same bytes (+0.7 MB of scales). Its accuracy level is the target's
trade (optimizer/isa.py):
- accuracy_level 0 (float activations; targets without integer dot products, i.e. plain AVX2): fidelity
  of int8-weight (held-out mean cosine 0.9998, min 0.9993) on every CPU, but MatMulNBits dequantizes each
  block on every call: 2.4x slower warm than int8-weight at batch 1 on AVX-512, 3.8x on AVX2 (issue 14).
- accuracy_level 4 (int8 activations; VNNI / AMX / arm64 dot product): the fastest int8 at batch 1 on
  AVX-512 VNNI (3x int8-weight), mean cosine 0.9995 / min 0.998, numerics that depend on the CPU's kernels.
  On plain AVX2 it is still 1.7x slower than float32 (issue 14), hence level 0 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import graph_tools, isa, onnx_io
from slimserve.optimizer.int8_rewrites import (
    EmbeddingMode,
    MatMulMode,
    quantize_embeddings,
    quantize_linear_weights,
)
from slimserve.optimizer.nbits import replace_matmuls_nbits
from slimserve.optimizer.steps.base import StepContext, StepResult, StepSpec, option
from slimserve.optimizer.weight_graph import MIN_ELEMENTS

STEP = "int8-weight"


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


def quantize(src: Path, dst: Path, ctx: StepContext, opts: Int8WeightOptions, step: str = STEP) -> StepResult:
    """Weight-only int8 of `src` into `dst` with `opts`."""
    prepared, notes = graph_tools.normalize_for_quant(Path(src), ctx.work_dir, step)
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
                    gemm=True,  # a Gemm's weight folded to float would not stay resident
                )
            )
            n_lin += quantize_linear_weights(model, "castmul", conv=opts.conv)
        elif opts.matmul != "none":
            n_lin = quantize_linear_weights(
                model, opts.matmul, conv=opts.conv, block=opts.block, min_elements=opts.min_elements
            )
        else:
            n_lin = 0
    except (ValueError, KeyError, IndexError) as exc:
        raise ToolError(f"{step}: cannot rewrite the weights of {Path(src).name}: {first_line(exc)}") from exc
    if n_emb + n_lin == 0:  # an "int8" result that is the float model, mislabelled
        raise SlimserveError(f"{step} does not apply to {Path(src).name}: no float MatMul/Gemm/Conv weight or "
                             "embedding table is large enough to quantize (at least min_elements numbers, read "
                             "directly by the node)",
                             hint="keep fp32 or fp16 for this model, or lower int8-weight(min_elements=...)")
    onnx_io.save_model(model, Path(dst), step)
    graph_tools.check_session(Path(dst), step)
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


RESIDENT_STEP = "int8-resident"


@dataclass(frozen=True)
class Int8ResidentOptions:
    """int8-weight's nbits form, its accuracy level picked for the CPU it will run on."""

    cpu: isa.CpuTarget | None = option(  # noqa: RUF009 - option() is dataclasses.field with help
        None, "target CPU (optimize --cpu sets it): x86-64-avx2, x86-64-avx512-vnni, arm64-dotprod... "
        "none = the build machine's architecture at its baseline (x86-64-avx2 on x86-64)")
    accuracy_level: Literal["auto", 0, 4] = option(
        "auto", "MatMulNBits accuracy_level: auto = 4 on CPUs with integer dot products (VNNI, AMX, arm64 "
        "dotprod/i8mm), 0 (float activations) elsewhere; 0 dequantizes the whole weight at every call, so use "
        "4 for a language model (token-by-token decode: 13x slower than float32 at 0)")
    block: int = option(32, "inputs per scale along the reduction axis")
    embeddings: EmbeddingMode = option(  # noqa: RUF009 - option() is dataclasses.field with help
        "gather-mul", "embedding tables: gather-mul (int8 rows x row scales), gbq, dq, none")
    min_elements: int = option(MIN_ELEMENTS, "tensors smaller than this stay float")


def resident_level(options: Int8ResidentOptions) -> tuple[str, int]:
    """(target, accuracy level) for these options."""
    target = isa.resolve(options.cpu)
    if options.accuracy_level != "auto":
        return target, options.accuracy_level
    return target, 4 if isa.has_integer_dot(target) else 0


def run_resident(src: Path, dst: Path, ctx: StepContext, options: Int8ResidentOptions) -> StepResult:
    """MatMul weights as MatMulNBits bits=8, kept int8 in memory, at the target's accuracy level."""
    target, level = resident_level(options)
    opts = Int8WeightOptions(matmul="nbits", embeddings=options.embeddings, block=options.block,
                             accuracy_level=level, min_elements=options.min_elements)
    with ctx.progress.stage(f"{RESIDENT_STEP}: int8 weights resident (MatMulNBits, accuracy level {level})"):
        result = quantize(Path(src), Path(dst), ctx, opts, RESIDENT_STEP)
    why = ("int8 activations: this target has integer dot products" if level == 4 else
           "float activations: fidelity of int8-weight on every CPU, slower warm than float32 "
           "(each block is dequantized per call)")
    return StepResult(path=result.path,
                      notes=(f"int8-resident for {target}: MatMulNBits bits=8 accuracy_level {level} ({why})",
                             *result.notes[:-1],
                             "weights int8 and kept int8 in memory; " + (
                                 "activations int8 in the matmuls" if level else "activations and compute float")),
                      details={**result.details, "accuracy_level": level, "cpu": target})


RESIDENT_SPEC = StepSpec(
    name=RESIDENT_STEP,
    help="int8 weights that stay int8 in memory (MatMulNBits bits=8, block 32): about half int8-weight's peak "
    "RSS. Accuracy level by the target CPU: 4 (int8 activations) with VNNI/AMX/arm64 dot product, else 0 "
    "(float activations, int8-weight's fidelity, 2-4x slower warm).",
    run=run_resident,
    options=Int8ResidentOptions,
)
