"""onnxruntime graph tools the steps share: offline graph optimization at a portable level, the check
that a written model loads on stock onnxruntime CPU, the normalisation every quantizer needs (weights as
plain initializers) with onnxruntime's quantization pre-processing after it, a one-line error for a
quantizer failure, and a topological sort. Reading and writing models is `onnx_io`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.notes import diagnostic
from slimserve.optimizer import onnx_io

if TYPE_CHECKING:
    import onnx

# Portable offline levels, by name (see module docstring for why "all" is absent).
LEVELS = ("basic", "extended")
DEFAULT_LEVEL = "extended"


def check_session(path: Path, step: str) -> None:
    """Prove the written model loads in a stock onnxruntime CPU session; ToolError (one line) otherwise."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4  # our one error line says it (see cli.quiet_onnxruntime)
    try:
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ToolError(
            f"{step}: the written model does not load in onnxruntime: {first_line(exc)}",
            hint="report this model to the slimserve maintainers; try another recipe step meanwhile",
        ) from exc


def ort_optimize(src: Path, dst: Path, step: str, level: str = DEFAULT_LEVEL) -> Path:
    """Run ORT's graph optimizer at a portable `level` and save the result to `dst` (offline mode)."""
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    if level not in levels:
        raise SlimserveError(f"{step}: unknown optimization level {level!r}", hint=f"use one of {LEVELS}")
    onnx_io.require_file(src, step)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.optimized_model_filepath = str(dst)
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4  # our one error line says it (see cli.quiet_onnxruntime)
    if _needs_external(src):
        # ORT writes initializers beside the model when asked; required past the protobuf limit.
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", Path(dst).name + ".data"
        )
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ToolError(f"{step}: onnxruntime cannot optimize {Path(src).name}: {first_line(exc)}") from exc
    return Path(dst)


def _needs_external(src: Path) -> bool:
    """True when the source model with its data is near the protobuf limit."""
    src = Path(src)
    total = src.stat().st_size
    # The files its tensors point to (optimum names them `model.onnx_data`), plus the usual `<stem>*.data`.
    try:
        referenced = set(onnx_io.external_data_files(onnx_io.load_onnx(src)))
    except SlimserveError:  # not ONNX at all: the tool that reads it next says so, as it always did
        referenced = set()
    for sibling in src.parent.iterdir():
        if sibling != src and (sibling.name in referenced
                               or (sibling.suffix in {".data", ".bin"} and sibling.name.startswith(src.stem))):
            total += sibling.stat().st_size
    return total > onnx_io.PROTOBUF_LIMIT


def detach_initializer_inputs(model: onnx.ModelProto) -> int:
    """Drop graph inputs that merely shadow an initializer (old exporters' keep_initializers_as_inputs).

    Such weights are overridable at run time, so no optimizer may fold or quantize them. No serving code
    feeds weights, so we make them plain constants. Returns how many inputs were removed.
    """
    names = {init.name for init in model.graph.initializer}
    keep = [inp for inp in model.graph.input if inp.name not in names]
    removed = len(model.graph.input) - len(keep)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return removed


def name_nodes(graph: onnx.GraphProto) -> int:
    """Give every unnamed node of the main graph a unique name: the quantizers exclude, rank and report
    nodes by name, and exporters (onnx.helper, some converters) leave names empty. Returns how many."""
    used = {n.name for n in graph.node if n.name}
    count = 0
    for index, node in enumerate(graph.node):
        if node.name:
            continue
        name, k = f"{node.op_type}_{index}", 0
        while name in used:
            k += 1
            name = f"{node.op_type}_{index}_{k}"
        node.name = name
        used.add(name)
        count += 1
    return count


def normalize_for_quant(src: Path, work_dir: Path, step: str) -> tuple[Path, tuple[str, ...]]:
    """A copy of `src` whose weights are plain initializers, ready for the quantizers.

    Weights can arrive through Constant nodes, Identity/Transpose of initializers or graph inputs with
    initializers; quantizers only look at initializers. Detaching the shadowing inputs and running ORT's
    basic level (constant folding, ONNX ops only, so still portable) turns all of those into initializers.
    When ORT cannot optimize the model we fall back to the detached model as it is, and say so.
    """
    model = onnx_io.read_model(src, step)
    notes: list[str] = []
    removed = detach_initializer_inputs(model)
    if removed:
        notes.append(diagnostic(f"{removed} graph inputs that shadowed initializers were made constants"))
    name_nodes(model.graph)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    detached = onnx_io.save_model(model, work_dir / f"{step}-detached.onnx", step)
    folded = work_dir / f"{step}-folded.onnx"
    try:
        ort_optimize(detached, folded, step, "basic")
    except ToolError as exc:
        notes.append(diagnostic(f"constant folding skipped ({exc.message})"))
        return detached, tuple(notes)
    return folded, tuple(notes)


def opset(path: Path) -> int:
    """The default-domain opset of the model at `path`."""
    model = onnx_io.read_model(path, "onnx", with_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def opset_at_least(src: Path, version: int, work_dir: Path, step: str) -> tuple[Path, tuple[str, ...]]:
    """`src`, or a copy converted to opset `version` when it is older (onnx's version converter). When the
    converter cannot, `src` is returned as it is with a note; callers then avoid what needs the newer opset."""
    import onnx
    from onnx import version_converter

    current = opset(src)
    if current >= version:
        return Path(src), ()
    try:
        model = onnx_io.read_model(src, step)
        converted = version_converter.convert_version(model, version)
        onnx.checker.check_model(converted, full_check=False)
        out = onnx_io.save_model(converted, Path(work_dir) / f"{step}-opset{version}.onnx", step)
        check_session(out, step)
    except Exception as exc:  # noqa: BLE001  # the converter lacks an adapter for some op: keep the original opset
        note = (f"opset {current} could not be converted to {version} ({first_line(exc)}): "
                "weights quantized per tensor instead of per channel")
        return Path(src), (note,)
    return out, (f"opset {current} converted to {version} for per-channel quantization",)


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` topologically in place (stable), as onnx.checker requires; subgraphs too.

    Some converters (onnxruntime's float16 tool) append the Casts they insert at the end of the list;
    ORT accepts that, onnx.checker and other runtimes do not. Inputs no node produces (graph inputs,
    initializers, outer-scope values) count as available.
    """
    produced = {o for n in graph.node for o in n.output if o}
    ready: set[str] = set()
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            needs = [i for i in node_inputs(node) if i and i in produced]
            if all(i in ready for i in needs):
                ordered.append(node)
                ready.update(o for o in node.output if o)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling input: leave the rest in their order
            ordered.extend(rest)
            break
        pending = rest
    copies = [type(n)() for n in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)
    for node in graph.node:  # If/Loop/Scan bodies: the converter appends its Casts there too (Silero VAD)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                toposort(sub)


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs plus the outer-scope values its subgraphs read."""
    names = list(node.input)
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.input}
            inner |= {t.name for t in sub.initializer}
            for n in sub.node:
                names += [i for i in node_inputs(n) if i not in inner]
    return names


def preprocess(src: Path, work: Path, step: str) -> tuple[Path, tuple[str, ...]]:
    """Constant folding (ours), then ORT's quant pre-processing (shape inference) where it works.

    Symbolic shape inference fails on many exported graphs (on MiniLM's export it raises a TypeError in
    its broadcasting rule); ONNX shape inference alone then still annotates most tensors. If both fail we
    quantize the folded model as it is and say so in the notes.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, notes = normalize_for_quant(src, work, step)
    out = work / f"{step}-pre.onnx"
    # Past protobuf's 2 GB the result must be written with its weights in external data.
    large = {"save_as_external_data": True, "all_tensors_to_one_file": True,
             "external_data_location": out.name + ".data"} if _needs_external(prepared) else {}
    try:
        quant_pre_process(str(prepared), str(out), skip_optimization=True, auto_merge=True, **large)
        return out, notes
    except Exception as exc:  # noqa: BLE001 - optional step; we fall back below and note why
        symbolic_error = first_line(exc)
    try:
        quant_pre_process(str(prepared), str(out), skip_optimization=True, skip_symbolic_shape=True, **large)
    except Exception as exc:  # noqa: BLE001 - optional step; quantizing without it still works
        return prepared, (*notes, diagnostic(f"quantization pre-processing skipped ({first_line(exc)})"))
    return out, (*notes, diagnostic(f"symbolic shape inference failed ({symbolic_error}); used ONNX shape inference"))


def quantizer_error(step: str, model_path: Path, exc: BaseException) -> ToolError:
    """One-line ToolError naming the node (and its op) the quantizer choked on, when we can tell."""

    text = str(exc)
    culprit = ""
    try:
        model = onnx_io.read_model(model_path, step, with_data=False)
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
