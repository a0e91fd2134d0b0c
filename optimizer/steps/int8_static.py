"""Step `int8-static`: calibrated QDQ int8 (activation ranges fixed from calibration feeds).

Recipe (measured on all-MiniLM-L6-v2, benchmarks/results/quant_sweep.md):
- ONNX Runtime's quantize_static in QDQ format on MatMul/Gemm/Conv only, per-channel symmetric 8-bit
  weights stored as uint8 (U8U8 kernels: int8 weights saturate on x86-64 CPUs without VNNI, see
  int8_dynamic's docstring and benchmarks/results/int8_isa.md), uint8 activations with ranges from
  `ctx.calibration`. Quantizing Add/Softmax/LayerNorm inputs
  too (ORT's default op list) costs fidelity for no speed on CPU, where the matmuls are the work.
- Calibration method chosen by measurement among MinMax, Percentile (99.999) and Entropy: see
  `DEFAULT_METHOD` and the sweep rows st-* (benchmarks/quant_sweep.py).
- Excluded from integer compute: the GELU-fed MatMuls (FFN down-projections, as in int8-dynamic) plus
  the 6 MatMuls with the largest error under int8-dynamic's calibration proxy (on MiniLM the FFN
  up-projections, whose LayerNorm-output inputs carry outlier channels that one fixed per-tensor range
  handles badly). That lifted mean cosine from 0.988 to 0.995 (sweep rows st-minmax-gelu-only vs
  int8-static). Excluded MatMuls keep int8 weights in int8-weight's folded form; embedding tables get
  int8 rows with per-row scales.
Without calibration feeds the step refuses to guess ranges: it raises SlimserveError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import graph_tools, int8_rewrites, matmul_analysis, onnx_io
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option

STEP = "int8-static"
DEFAULT_METHOD: Literal["MinMax", "Percentile", "Entropy"] = "MinMax"
MAX_FEEDS = 64


@dataclass(frozen=True)
class StaticOptions:
    """Knobs of the static recipe; defaults are the measured choice."""

    method: Literal["MinMax", "Percentile", "Entropy"] = option(DEFAULT_METHOD, "activation range calibration")
    exclude_gelu: bool = option(True, "keep the GELU-fed MatMuls (FFN down-projections) out of integer compute")
    exclude_ranked: int = option(
        6, "also exclude the N MatMuls with the largest calibration error (int8-dynamic's proxy; at most a sixth)")
    op_types: tuple[str, ...] = option(("MatMul", "Gemm", "Conv"), "op types to quantize")
    activation_int8: bool = option(False, "int8 activations (S8S8); false: uint8")
    weight_type: Literal["uint8", "int8"] = option(
        "uint8", "uint8: U8U8 kernels, exact on every x86-64; int8: U8S8, saturates on CPUs without VNNI")


class _Feeds:
    """ORT CalibrationDataReader over our feeds, keeping only the inputs the model declares."""

    def __init__(self, feeds: Sequence[Feed], input_names: set[str]) -> None:
        self._feeds = list(feeds)
        self._names = input_names
        self._iter: Iterator[Feed] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._iter, None)
        return None if feed is None else {k: v for k, v in feed.items() if k in self._names}

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


def uniform_feeds(feeds: Sequence[Feed]) -> list[Feed]:
    """Feeds that share one shape per input, as ORT's histogram calibrators (Percentile, Entropy) need.

    Batch-1 text feeds differ in length. When only integer inputs differ, and only in their last axis
    (token ids, attention masks), we right-pad them with 0, the Hugging Face convention for [PAD] and
    "masked", so the padded positions do not take part in attention. Otherwise we keep the largest group
    of feeds whose shapes already agree.
    """
    feeds = list(feeds)
    if not feeds:
        return feeds
    names = list(feeds[0])
    varying = [n for n in names if len({f[n].shape for f in feeds}) > 1]
    if not varying:
        return feeds
    paddable = all(
        np.issubdtype(f[n].dtype, np.integer) and len({f[n].shape[:-1] for f in feeds}) == 1
        for n in varying
        for f in feeds[:1]
    )
    if paddable:
        out: list[Feed] = []
        for f in feeds:
            g = dict(f)
            for n in varying:
                width = max(x[n].shape[-1] for x in feeds)
                pad = [(0, 0)] * (f[n].ndim - 1) + [(0, width - f[n].shape[-1])]
                g[n] = np.pad(f[n], pad)
            out.append(g)
        return out
    groups: dict[tuple[tuple[int, ...], ...], list[Feed]] = {}
    for f in feeds:
        groups.setdefault(tuple(f[n].shape for n in names), []).append(f)
    return max(groups.values(), key=len)


def _input_names(path: Path) -> set[str]:

    model = onnx_io.read_model(path, STEP, with_data=False)
    inits = {t.name for t in model.graph.initializer}
    return {i.name for i in model.graph.input if i.name not in inits}


# Per-channel QDQ needs DequantizeLinear's `axis` (opset 13); ORT's quantizer writes it on older models too,
# which onnxruntime then refuses to load (PP-OCR's opset-11 exports).
PER_CHANNEL_OPSET = 13


def quantize(src: Path, dst: Path, ctx: StepContext, opts: StaticOptions, step: str = STEP) -> StepResult:
    """Static QDQ int8 of `src` into `dst`."""
    if not ctx.calibration:
        raise SlimserveError(
            f"{step} needs calibration inputs to fix activation ranges, and none were given",
            hint="provide evaluation inputs (they double as calibration) or use int8-dynamic / int8-weight",
        )
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {m.name: m for m in CalibrationMethod}
    if opts.method not in methods:
        raise SlimserveError(
            f"{step}: unknown calibration method {opts.method}", hint=f"use one of {sorted(methods)}"
        )
    work = Path(ctx.work_dir)
    prepared, notes = graph_tools.preprocess(Path(src), work, step)
    prepared, upgraded = graph_tools.opset_at_least(prepared, PER_CHANNEL_OPSET, work, step)
    notes += upgraded
    excluded = matmul_analysis.gelu_fed_matmuls(prepared) if opts.exclude_gelu else []
    # At most a sixth of the MatMuls by ranking (6 of MiniLM's 36), so small models still get quantized.
    budget = min(opts.exclude_ranked, len(matmul_analysis.constant_matmul_weights(prepared)) // 6)
    if budget:
        ranked = matmul_analysis.rank_by_dynamic_error(prepared, ctx.calibration)[: budget + len(excluded)]
        excluded += [n for n in ranked if n not in excluded][:budget]
    feeds = list(ctx.calibration[:MAX_FEEDS])
    reader = _Feeds(uniform_feeds(feeds) if opts.method != "MinMax" else feeds, _input_names(prepared))
    act = QuantType.QInt8 if opts.activation_int8 else QuantType.QUInt8
    quantized = work / f"{step}-quantized.onnx"
    extra: dict[str, bool | float] = {
        "WeightSymmetric": True,
        "MatMulConstBOnly": True,
        "CalibTensorRangeSymmetric": False,
    }
    if opts.method == "Percentile":
        extra["CalibPercentile"] = 99.999
    try:
        quantize_static(
            str(prepared),
            str(quantized),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=act,
            weight_type=QuantType.QUInt8 if opts.weight_type == "uint8" else QuantType.QInt8,
            op_types_to_quantize=list(opts.op_types),
            nodes_to_exclude=excluded,
            per_channel=graph_tools.opset(prepared) >= PER_CHANNEL_OPSET,
            calibrate_method=methods[opts.method],
            extra_options=extra,
        )
    except Exception as exc:  # ORT's calibrator and quantizer raise many exception types
        raise graph_tools.quantizer_error(step, prepared, exc) from exc
    model = onnx_io.read_model(quantized, step)
    try:
        n_emb = int8_rewrites.quantize_embeddings(model, "gather-mul")
        n_fold = int8_rewrites.quantize_linear_weights(model)
    except (ValueError, KeyError, IndexError) as exc:
        raise ToolError(f"{step}: cannot quantize the remaining float weights: {first_line(exc)}") from exc
    quantized_ops = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    if quantized_ops == 0 and n_emb + n_fold == 0:  # the float model under an int8 name
        raise SlimserveError(f"{step} does not apply to {Path(src).name}: onnxruntime's quantizer found no "
                             f"{'/'.join(opts.op_types)} node with a constant weight to quantize (weights computed "
                             "at run time, or inside control flow)",
                             hint="keep fp32 or fp16 for this model")
    onnx_io.save_model(model, Path(dst), step)
    graph_tools.check_session(Path(dst), step)
    notes += (
        (
            f"static QDQ int8, {opts.method} calibration on {min(len(ctx.calibration), MAX_FEEDS)} feeds; "
            f"{len(excluded)} MatMuls kept out of integer compute (GELU-fed and the most error-prone)"
        ),
        "activation ranges are fixed: inputs unlike the calibration set may lose more fidelity",
    )
    return StepResult(
        path=Path(dst),
        notes=notes,
        details={"method": opts.method, "excluded": excluded, "int8_embeddings": n_emb, "folded": n_fold},
    )


def run(src: Path, dst: Path, ctx: StepContext, options: StaticOptions) -> StepResult:
    """Calibrated QDQ int8 (the measured defaults unless the recipe sets options)."""
    with ctx.progress.stage(f"{STEP}: calibrated QDQ int8"):
        return quantize(Path(src), Path(dst), ctx, options)


SPEC = StepSpec(
    name=STEP,
    help="Calibrated static int8 (QDQ, per-channel weights); needs calibration inputs.",
    run=run,
    options=StaticOptions,
)
