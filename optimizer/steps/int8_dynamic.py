"""Step `int8-dynamic`: integer matmuls (MatMulInteger / DynamicQuantizeMatMul) for CPU speed.

Recipe (measured on all-MiniLM-L6-v2, benchmarks/results/quant_sweep.md):
- ONNX Runtime's dynamic quantizer on MatMul/Gemm/Conv (plus LSTM where present) with per-channel,
  symmetric int8 weights and uint8 activations quantized per tensor at run time. Per-tensor weights
  (ORT's default) lose real fidelity on MiniLM; per-channel recovers most of it.
- Weights are stored as uint8 (onnxruntime's U8U8 kernels), not int8. A model is built on one machine
  and deployed on another: on x86-64 CPUs without VNNI (AVX2 only), the U8S8 kernels multiply with
  VPMADDUBSW, which saturates pairs of uint8 x int8 products at int16, so an int8-weight model that is
  exact on a VNNI build machine silently loses accuracy where it runs. U8U8 never saturates, on any CPU,
  at full 8-bit precision (benchmarks/results/int8_isa.md measures both, natively and on an emulated
  AVX2 CPU). `weight_type="int8"` keeps the U8S8 form for users who target VNNI or arm64 only.
- reduce_range (7-bit weights) costs fidelity; it is used only when the model has LSTMs, because
  onnxruntime's DynamicQuantizeLSTM saturates on AVX2 with either weight type (measured on the test
  LSTM: error 0.08 with uint8 weights, 0.02 with reduce_range, on an emulated Haswell).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from slimserve.errors import ToolError, first_line
from slimserve.optimizer import activations, graph_tools, int8_rewrites, onnx_io
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option

if TYPE_CHECKING:
    import onnx

STEP = "int8-dynamic"
GELU_OPS = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu"}
MAX_ROWS = 4096  # captured activation rows per tensor: enough for a stable error estimate


@dataclass(frozen=True)
class DynamicOptions:
    """Knobs of the dynamic recipe; defaults are the measured choice."""

    per_channel: bool = option(True, "one weight scale per output channel (false: per tensor, ORT's default)")
    reduce_range: bool | None = option(None, "7-bit weights; none: only for models with LSTMs")
    weight_type: Literal["uint8", "int8"] = option(
        "uint8", "uint8: U8U8 kernels, exact on every x86-64; int8: U8S8, saturates on CPUs without VNNI")
    exclude: int | None = option(
        None, "MatMuls kept out of integer compute: none = the GELU-fed ones; N = the N worst by calibration error")
    exclude_ranked: int = option(0, "with exclude=none, also the N worst by calibration error (at most a sixth)")
    excluded_int8_weights: bool = option(True, "excluded MatMuls keep int8 storage (int8-weight's folded form)")
    int8_embeddings: bool = option(True, "embedding tables int8 per row (int8-weight's form)")
    op_types: tuple[str, ...] = option(("MatMul", "Gemm", "Conv", "LSTM"), "op types to quantize")
    preprocess: bool = option(True, "constant folding and ORT's quantization pre-processing first")


def constant_matmul_weights(model_path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """MatMul/Gemm nodes of the main graph with a constant 2-D float weight: name -> (input A, W as [K, N])."""
    import onnx
    from onnx import numpy_helper

    model = onnx_io.read_model(model_path, STEP)
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if attrs.get("transA", 0):
            continue
        w = numpy_helper.to_array(init)
        out[node.name] = (node.input[0], w.T if attrs.get("transB", 0) else w)
    return out


def capture_inputs(
    model_path: Path, node_names: Sequence[str], feeds: Sequence[Feed]
) -> dict[str, np.ndarray]:
    """Run the model on `feeds` and return the first input of each named node as [rows, K] float32."""

    model = onnx_io.read_model(model_path, STEP)
    graph_inputs = {i.name for i in model.graph.input}
    wanted = sorted({n.input[0] for n in model.graph.node if n.name in set(node_names)} - graph_inputs)
    rows: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for _, values in activations.capture(model, wanted, feeds, STEP):
        for n, v in zip(wanted, values):
            rows[n].append(np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1]))
    return {n: activations.subsample(np.concatenate(parts), MAX_ROWS) for n, parts in rows.items() if parts}


def dynamic_error(x: np.ndarray, w: np.ndarray, per_channel: bool, reduce_range: bool) -> float:
    """Relative output error of one MatMul under ORT-style dynamic quantization.

    Activations: uint8, asymmetric, one range per tensor (what DynamicQuantizeLinear does per call; we use
    the range over the captured rows, a slight overestimate). Weights: symmetric int8 per channel or per
    tensor, 7-bit when `reduce_range`.
    """
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    sx = (hi - lo) / 255.0 or 1.0
    zx = np.rint(-lo / sx)
    xq = (np.clip(np.rint(x / sx) + zx, 0, 255) - zx) * sx
    qmax = 63.0 if reduce_range else 127.0
    amax = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
    sw = np.where(amax > 0, amax / qmax, 1.0)
    wq = np.clip(np.rint(w / sw), -qmax, qmax) * sw
    ref = x @ w
    return float(np.linalg.norm(xq @ wq - ref)) / max(float(np.linalg.norm(ref)), 1e-12)


def gelu_fed_matmuls(model_path: Path) -> list[str]:
    """MatMuls whose input is a GELU output (fused op, or the Erf form x*0.5*(1+erf(x/sqrt2)))."""

    model = onnx_io.read_model(model_path, STEP, with_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}

    def is_gelu(value: str, depth: int = 0) -> bool:
        node = producer.get(value)
        if node is None or depth > 3:
            return False
        if node.op_type in GELU_OPS:
            return True
        if node.op_type == "Mul":  # the Erf form ends with Mul(...); look a few nodes up for the Erf
            return any(_has_erf(producer, i, 3) for i in node.input)
        return False

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and is_gelu(n.input[0])]


def _has_erf(producer: dict[str, onnx.NodeProto], value: str, depth: int) -> bool:
    node = producer.get(value)
    if node is None or depth < 0:
        return False
    return node.op_type == "Erf" or any(_has_erf(producer, i, depth - 1) for i in node.input)


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
        rule = gelu_fed_matmuls(model_path)
        budget = min(opts.exclude_ranked, len(constant_matmul_weights(model_path)) // 6)
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
    weights = constant_matmul_weights(model_path)
    if not weights or not feeds:
        return [], "no calibration feeds to rank MatMuls"
    xs = capture_inputs(model_path, list(weights), feeds[:16])
    scores = {
        name: dynamic_error(xs[x], w, opts.per_channel, bool(opts.reduce_range))
        for name, (x, w) in weights.items()
        if x in xs
    }
    ranked = sorted(scores, key=scores.get, reverse=True)  # type: ignore[arg-type]
    return ranked[: opts.exclude], f"the {opts.exclude} MatMuls with the largest calibration error"


def preprocess(src: Path, work: Path, step: str) -> tuple[Path, tuple[str, ...]]:
    """Constant folding (ours), then ORT's quant pre-processing (shape inference) where it works.

    Symbolic shape inference fails on many exported graphs (on MiniLM's export it raises a TypeError in
    its broadcasting rule); ONNX shape inference alone then still annotates most tensors. If both fail we
    quantize the folded model as it is and say so in the notes.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, notes = graph_tools.normalize_for_quant(src, work, step)
    out = work / f"{step}-pre.onnx"
    try:
        quant_pre_process(str(prepared), str(out), skip_optimization=True, auto_merge=True)
        return out, notes
    except Exception as exc:  # noqa: BLE001 - optional step; we fall back below and note why
        symbolic_error = first_line(exc)
    try:
        quant_pre_process(str(prepared), str(out), skip_optimization=True, skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - optional step; quantizing without it still works
        return prepared, (*notes, f"quantization pre-processing skipped ({first_line(exc)})")
    return out, (*notes, f"symbolic shape inference failed ({symbolic_error}); used ONNX shape inference")


def quantizer_error(step: str, model_path: Path, exc: BaseException) -> ToolError:
    """One-line ToolError naming the node (and its op) the quantizer choked on, when we can tell."""

    text = str(exc)
    culprit = ""
    try:
        model = onnx_io.read_model(model_path, STEP, with_data=False)
        for node in model.graph.node:
            if node.name and node.name in text:
                culprit = f" node {node.name} (op {node.op_type})"
                break
        if not culprit:
            flow = sorted({n.op_type for n in model.graph.node if n.op_type in ("Loop", "If", "Scan")})
            culprit = f" a model with {'/'.join(flow)} control flow" if flow else ""
    except Exception:  # noqa: BLE001 - naming the node is a courtesy; the original failure is what matters
        culprit = ""
    return ToolError(
        f"{step}: onnxruntime's quantizer cannot handle{culprit or ' this model'}: {first_line(exc)}",
        hint="try int8-weight, which only rewrites constant weights",
    )


def _has_op(model_path: Path, op_type: str) -> bool:

    model = onnx_io.read_model(model_path, STEP, with_data=False)
    return any(node.op_type == op_type for node in model.graph.node)


def quantize(src: Path, dst: Path, ctx: StepContext, opts: DynamicOptions, step: str = STEP) -> StepResult:
    """Dynamic int8 of `src` into `dst` with `opts`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    work = Path(ctx.work_dir)
    prepared, notes = preprocess(Path(src), work, step) if opts.preprocess else (Path(src), ())
    if opts.reduce_range is None:
        opts = replace(opts, reduce_range="LSTM" in opts.op_types and _has_op(prepared, "LSTM"))
    excluded, why = sensitive_nodes(prepared, ctx.calibration, opts)
    quantized = work / f"{step}-quantized.onnx"
    try:
        quantize_dynamic(
            str(prepared),
            str(quantized),
            op_types_to_quantize=list(opts.op_types),
            per_channel=opts.per_channel,
            reduce_range=bool(opts.reduce_range),
            weight_type=QuantType.QUInt8 if opts.weight_type == "uint8" else QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True},
        )
    except Exception as exc:  # ORT's quantizer raises anything from AssertionError to KeyError
        raise quantizer_error(step, prepared, exc) from exc
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
    if integer_ops == 0:
        notes += ("no MatMul/Gemm/Conv/LSTM with constant weights was quantized: the model is unchanged",)
    notes += (
        (
            f"dynamic int8 ({'per-channel' if opts.per_channel else 'per-tensor'} {opts.weight_type} weights"
            f"{', reduce_range for LSTM' if opts.reduce_range else ''}); {len(excluded)} MatMuls kept out of integer "
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
