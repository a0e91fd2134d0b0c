"""Step `int8-dynamic`: integer matmuls (MatMulInteger / DynamicQuantizeMatMul) for CPU speed.

Recipe (measured on all-MiniLM-L6-v2, benchmarks/results/quant_sweep.md):
- ONNX Runtime's dynamic quantizer on MatMul/Gemm/Conv (plus LSTM where present) with per-channel,
  symmetric int8 weights and uint8 activations quantized per tensor at run time. Per-tensor weights
  (ORT's default) lose real fidelity on MiniLM; per-channel recovers most of it.
- Weights are 7-bit (reduce_range). A model is built on one machine and deployed on another: on x86-64
  CPUs without VNNI (AVX2 only), onnxruntime's U8S8 kernels multiply with VPMADDUBSW, which adds pairs of
  uint8 x int8 products into int16 with saturation, so a full-range int8 model that is exact on a VNNI
  build machine silently loses accuracy where it runs (MiniLM: mean cosine 0.9955 on VNNI, 0.9931 on
  AVX2). With weights in [-64, 63] a pair is at most 2 x 255 x 64 = 32,640 and never saturates.
  Measured on MiniLM natively and on an emulated AVX2 CPU (benchmarks/results/int8_isa.md): 7-bit
  weights are as faithful as uint8 weights (U8U8 kernels, also saturation-free) on both CPUs, and keep
  U8S8's speed (batch 8: 7.9 ms vs U8U8's 10.5 ms on VNNI). DynamicQuantizeLSTM saturates on AVX2 with
  either weight type unless reduce_range is on. `int8-dynamic(reduce_range=false)` is for a target known
  to have VNNI (or arm64's dot product), `weight_type=uint8` for U8U8.
- The MatMuls whose input is a GELU output (the FFN down-projections: long-tailed, mostly-near-zero
  inputs that per-tensor uint8 activations handle worst) are excluded from integer compute, found from
  the graph. They keep int8 weights in int8-weight's folded form, so the file stays int8-sized.
  A calibration-error ranking was measured too and did worse per excluded node (see sensitive_nodes).
- Embedding tables get the int8-weight treatment (int8 rows, per-row scale) rather than ORT's per-tensor
  uint8 Gather quantization, which costs fidelity for no speed.

Works on arbitrary models: weights that arrive through Constant nodes, Identity/Transpose of initializers
or graph inputs with initializers are turned into initializers first; control flow (Loop/If/Scan) keeps
its subgraphs float; anything ORT's quantizer rejects becomes a one-line ToolError naming the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import graph_tools, int8_rewrites, matmul_analysis, onnx_io
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option

STEP = "int8-dynamic"


@dataclass(frozen=True)
class DynamicOptions:
    """Knobs of the dynamic recipe; defaults are the measured choice."""

    per_channel: bool = option(True, "one weight scale per output channel (false: per tensor, ORT's default)")
    reduce_range: bool = option(True, "7-bit weights: U8S8 kernels never saturate on x86-64 CPUs without VNNI; "
                                      "false only for a target known to have VNNI or arm64")
    weight_type: Literal["uint8", "int8"] = option(
        "int8", "int8: U8S8 kernels (fast); uint8: U8U8 kernels, saturation-free at any range but slower")
    exclude: int | None = option(
        None, "MatMuls kept out of integer compute: none = the GELU-fed ones; N = the N worst by calibration error")
    exclude_ranked: int = option(0, "with exclude=none, also the N worst by calibration error (at most a sixth)")
    excluded_int8_weights: bool = option(True, "excluded MatMuls keep int8 storage (int8-weight's folded form)")
    int8_embeddings: bool = option(True, "embedding tables int8 per row (int8-weight's form)")
    op_types: tuple[str, ...] = option(("MatMul", "Gemm", "Conv", "LSTM"), "op types to quantize")
    preprocess: bool = option(True, "constant folding and ORT's quantization pre-processing first")


def sensitive_nodes(model_path: Path, feeds: Sequence[Feed], opts: DynamicOptions) -> tuple[list[str], str]:
    """The MatMuls to keep out of integer compute, and how they were chosen (for the step's notes).

    Default: the GELU rule. We also tried ranking by each MatMul's local error on calibration feeds
    (`exclude=N`): on MiniLM it ranks the FFN up-projections and value projections first, and excluding
    the 12 worst by that ranking bought no more cosine than excluding the 6 GELU-fed down-projections
    (sweep rows dyn-excl-12 vs dyn-gelu-rule): local error does not see how errors propagate.
    """
    if opts.exclude == 0:
        return [], "no exclusions"
    if opts.exclude is None:
        rule = matmul_analysis.gelu_fed_matmuls(model_path)
        budget = min(opts.exclude_ranked, len(matmul_analysis.constant_matmul_weights(model_path)) // 6)
        if not budget or not feeds:
            return rule, "MatMuls fed by GELU (FFN down-projections)"
        ranked, _ = sensitive_nodes(
            model_path,
            feeds,
            DynamicOptions(
                per_channel=opts.per_channel, reduce_range=opts.reduce_range, exclude=budget + len(rule)
            ),
        )
        extra = [n for n in ranked if n not in rule][:budget]
        return rule + extra, f"GELU-fed MatMuls and the {len(extra)} worst by calibration error"
    ranked = matmul_analysis.rank_by_dynamic_error(model_path, feeds, opts.per_channel, opts.reduce_range)
    if not ranked:
        return [], "no calibration feeds to rank MatMuls"
    return ranked[: opts.exclude], f"the {opts.exclude} MatMuls with the largest calibration error"


def quantize(src: Path, dst: Path, ctx: StepContext, opts: DynamicOptions, step: str = STEP) -> StepResult:
    """Dynamic int8 of `src` into `dst` with `opts`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    work = Path(ctx.work_dir)
    prepared, notes = graph_tools.preprocess(Path(src), work, step) if opts.preprocess else (Path(src), ())
    excluded, why = sensitive_nodes(prepared, ctx.calibration, opts)
    quantized = work / f"{step}-quantized.onnx"
    try:
        quantize_dynamic(
            str(prepared),
            str(quantized),
            op_types_to_quantize=list(opts.op_types),
            per_channel=opts.per_channel,
            reduce_range=opts.reduce_range,
            weight_type=QuantType.QUInt8 if opts.weight_type == "uint8" else QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True},
        )
    except Exception as exc:  # ORT's quantizer raises anything from AssertionError to KeyError
        raise graph_tools.quantizer_error(step, prepared, exc) from exc
    model = onnx_io.read_model(quantized, step)
    n_emb = n_fold = 0
    try:
        if opts.int8_embeddings:
            n_emb = int8_rewrites.quantize_embeddings(model, "gather-mul")
        if opts.excluded_int8_weights and excluded:
            # Excluded MatMuls compute in float32 but need not ship float32 weights.
            n_fold = int8_rewrites.quantize_linear_weights(model)
    except (ValueError, KeyError, IndexError) as exc:
        raise ToolError(f"{step}: cannot quantize the remaining float weights: {first_line(exc)}") from exc
    onnx_io.save_model(model, Path(dst), step)
    graph_tools.check_session(Path(dst), step)
    integer_ops = sum(
        n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger", "DynamicQuantizeLSTM")
        for n in model.graph.node
    )
    if integer_ops == 0 and n_emb + n_fold == 0:  # an "int8" result that is the float model, mislabelled
        raise SlimserveError(f"{step} does not apply to {Path(src).name}: no MatMul/Gemm/Conv/LSTM has a constant "
                             "weight onnxruntime's quantizer can take (weights computed at run time, or inside "
                             "control flow), and no embedding table",
                             hint="keep fp32 or fp16 for this model")
    if integer_ops == 0:
        notes += ("no MatMul/Gemm/Conv/LSTM was quantized for integer compute: only weight storage is int8",)
    notes += (
        (
            f"dynamic int8 ({'per-channel' if opts.per_channel else 'per-tensor'} {opts.weight_type} weights"
            f"{', 7-bit (reduce_range)' if opts.reduce_range else ''}); {len(excluded)} MatMuls kept out of integer "
            f"compute ({why})"
        ),
        "int8 matmuls are fastest on CPUs with VNNI (x86 avx512_vnni/avx_vnni, arm64 dot-product)",
    )
    return StepResult(
        path=Path(dst),
        notes=notes,
        details={
            "excluded": excluded,
            "integer_ops": integer_ops,
            "int8_embeddings": n_emb,
            "folded": n_fold,
        },
    )


def run(src: Path, dst: Path, ctx: StepContext, options: DynamicOptions) -> StepResult:
    """Dynamic int8 (the measured defaults unless the recipe sets options)."""
    with ctx.progress.stage(f"{STEP}: ONNX Runtime dynamic quantization"):
        return quantize(Path(src), Path(dst), ctx, options)


SPEC = StepSpec(
    name=STEP,
    help="Dynamic int8 (integer MatMul/Conv, per-channel weights) for CPU speed; the most error-prone "
    "MatMuls stay float.",
    run=run,
    options=DynamicOptions,
)
