"""Step `fp16`: float16 weights and compute, inputs/outputs kept float32, loadable on ORT CPU.

How: onnxruntime.transformers.float16.convert_float_to_float16 with keep_io_types=True, blocking the
op types that must stay float32:
- numerically fragile reductions (LayerNormalization statistics, ReduceL2/ReduceSum/ReduceMean, Pow,
  Sqrt, Softmax, Erf): float16 sums over a 384-wide row or a 256-token sequence lose digits the
  sentence embedding needs;
- any op the installed onnxruntime CPU build has no float16 kernel for: we load the converted model,
  read which node ORT could not place, block its op type, and convert again (a few rounds at most),
  so the result always loads on stock ORT CPU instead of failing in the user's handler.

Honest caveat (DESIGN.md): on CPU, float16 compute is usually slower than float32 (x86 has few fp16
kernels, so Casts go around most ops); the step halves the file, not the latency. The sweep measures it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import graph_tools, onnx_io
from slimserve.optimizer.steps.base import StepContext, StepResult, StepSpec, option

if TYPE_CHECKING:
    import onnx

STEP = "fp16"
# Kept float32 for accuracy (see module docstring); the ORT default block list is added to these.
PRECISION_BLOCK = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "ReduceL2",
    "ReduceSum",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Softmax",
    "Erf",
)
MAX_ROUNDS = 8
_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(")


@dataclass(frozen=True)
class Fp16Options:
    precision_block: bool = option(
        True, "keep fragile ops (LayerNorm, reductions, Pow/Sqrt, Softmax, Erf) float32; false: ORT's block list only")
    weights_only: bool = option(
        False, "store float16 weights only, cast back to float32 at load (float32 compute)")


def _convert(model_path: Path, blocked: set[str]) -> onnx.ModelProto:
    """One float16 conversion of the (already constant-folded) model with `blocked` op types kept fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx_io.read_model(model_path, STEP)
    model = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | blocked),
    )
    graph_tools.toposort(model.graph)  # the converter appends its Casts at the end of the node list
    converted: onnx.ModelProto = model
    return converted


def _missing_kernel(path: Path) -> str | None:
    """The op type ORT CPU has no kernel for in `path`, or None if the model loads."""
    try:
        graph_tools.check_session(path, STEP)
    except ToolError as exc:
        match = _NO_KERNEL.search(str(exc.__cause__ or exc))
        if match:
            return match.group(1)
        raise
    return None


def convert(
    src: Path, dst: Path, ctx: StepContext, extra_block: tuple[str, ...] = PRECISION_BLOCK
) -> StepResult:
    """Convert to float16, growing the block list until ORT CPU accepts every node."""
    prepared, notes = graph_tools.normalize_for_quant(Path(src), ctx.work_dir, STEP)
    blocked = set(extra_block)
    added: list[str] = []
    for _ in range(MAX_ROUNDS):
        try:
            model = _convert(prepared, blocked)
        except Exception as exc:  # the converter asserts and raises ValueError on odd graphs
            raise ToolError(f"{STEP}: float16 conversion failed: {first_line(exc)}") from exc
        onnx_io.save_model(model, Path(dst), STEP)
        missing = _missing_kernel(Path(dst))
        if missing is None:
            break
        if missing in blocked:
            raise ToolError(f"{STEP}: onnxruntime CPU has no float16 kernel for {missing} even when blocked")
        blocked.add(missing)
        added.append(missing)
    else:
        raise ToolError(f"{STEP}: still unloadable after keeping {', '.join(added)} in float32")
    from onnx import TensorProto

    halves = sum(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    if halves == 0:  # e.g. tree ensembles: ai.onnx.ml attributes are not tensors the converter can halve
        raise SlimserveError(f"{STEP} does not apply to {Path(src).name}: no weight became float16 (the model keeps "
                             "its numbers in operators the float16 converter does not rewrite, such as tree "
                             "ensembles)", hint="keep fp32 for this model")
    if added:
        notes += (f"kept float32 because ORT CPU has no float16 kernel: {', '.join(sorted(added))}",)
    notes += ("float16 compute is usually slower than float32 on CPU; this step mainly halves the file",)
    return StepResult(path=Path(dst), notes=notes, details={"kept_fp32_ops": sorted(blocked)})


def weights_only(src: Path, dst: Path, ctx: StepContext) -> StepResult:
    """float16 initializers cast back to float32 (ORT folds the Casts at load): float32 compute."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    prepared, notes = graph_tools.normalize_for_quant(Path(src), ctx.work_dir, STEP)
    model = onnx_io.read_model(prepared, STEP)
    casts, keep = [], []
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and int(np.prod(init.dims)) >= 4096:
            half = numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16"
            )
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], name=init.name + "_cast", to=1))
        else:
            keep.append(init)
    if not casts:  # a "fp16" result with every weight still float32 would be mislabelled
        raise SlimserveError(f"{STEP} does not apply to {Path(src).name}: no float32 weight of 4096 numbers or more "
                             "in the main graph (weights inside If/Loop bodies are not converted)",
                             hint="keep fp32 for this model")
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    for k, node in enumerate(casts):
        model.graph.node.insert(k, node)
    onnx_io.save_model(model, Path(dst), STEP)
    graph_tools.check_session(Path(dst), STEP)
    return StepResult(path=Path(dst), notes=notes)


def run(src: Path, dst: Path, ctx: StepContext, options: Fp16Options) -> StepResult:
    """float16 with float32 inputs/outputs and fragile or unsupported ops kept float32."""
    with ctx.progress.stage(f"{STEP}: float16 conversion"):
        if options.weights_only:
            return weights_only(Path(src), Path(dst), ctx)
        if _has_subgraphs(Path(src)):
            # onnxruntime's float16 converter puts the Casts a subgraph needs in the main graph, or returns
            # outer-scope values as subgraph outputs (Silero VAD): models ORT refuses. Store the weights
            # float16 instead (float32 compute), and say so.
            result = weights_only(Path(src), Path(dst), ctx)
            why = ("the model has control flow (If/Loop/Scan), which onnxruntime's float16 converter cannot "
                   "rewrite: weights stored float16, compute float32")
            return StepResult(path=result.path, details={**result.details, "weights_only": True},
                              notes=(*result.notes, why))
        return convert(Path(src), Path(dst), ctx, PRECISION_BLOCK if options.precision_block else ())


def _has_subgraphs(path: Path) -> bool:
    model = onnx_io.read_model(path, STEP, with_data=False)
    return any(attr.HasField("g") or len(attr.graphs) for node in model.graph.node for attr in node.attribute)


SPEC = StepSpec(
    name=STEP,
    help="float16 weights and compute with float32 inputs/outputs; ops without a CPU fp16 kernel stay "
    "float32. Halves the file; usually not faster on CPU.",
    run=run,
    options=Fp16Options,
)
