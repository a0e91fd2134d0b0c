"""Reading and writing ONNX files: the one home of load, save and the 2 GB rule.

User input is read with `load_onnx` (a clear error for empty, truncated or non-ONNX input, never a
traceback); a recipe step reads its input with `read_model` and writes with `save_model`, which switches
to ONNX external data (one `<name>.data` file beside the model) only past protobuf's 2 GiB limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError, ToolError, first_line

# Protobuf cannot serialise a message of 2 GiB or more: past this, tensors go to ONNX external data.
PROTOBUF_LIMIT = 2**31 - 1

_ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "float64", 16: "bfloat16"}


def _dims(type_proto: Any) -> list[int | str]:
    shape = type_proto.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def load_onnx(path: Path, *, with_data: bool = False) -> Any:
    """Parse an ONNX file; raises SlimserveError naming what is wrong with the file."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise SlimserveError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise SlimserveError(f"{path} is empty (0 bytes)", hint="re-export or re-download the model")
    try:
        model = onnx.load(str(path), load_external_data=with_data)
    except DecodeError:
        raise SlimserveError(f"{path} is not a valid ONNX file (truncated or not ONNX)",
                             hint="re-export or re-download the model") from None
    except (OSError, ValueError) as exc:
        raise SlimserveError(f"{path} cannot be read as ONNX: {str(exc).splitlines()[0][:200]}") from None
    if not model.graph.node or not model.graph.output or not model.opset_import:
        raise SlimserveError(f"{path} is not a usable ONNX model (no graph nodes, outputs or opset)",
                             hint="check that the file is an ONNX model, not another format")
    return model


def graphs(graph: Any) -> Iterator[Any]:
    """`graph` and every subgraph below it (If/Loop/Scan bodies, at any depth)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from graphs(attr.g)
            for sub in attr.graphs:
                yield from graphs(sub)


def all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor the file holds: initializers and tensor attributes (Constant values...), subgraphs too."""
    for graph in graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def external_data_files(model: Any) -> list[str]:
    """Names of the external data files the model's tensors point to (relative to the model)."""
    names: set[str] = set()
    for tensor in all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return sorted(names)


def describe_model(path: Path) -> dict[str, Any]:
    """Inputs, outputs (name, dtype, shape) and external data of a model file, without loading weights.

    Also screens the file as untrusted input (`screen_model`): external data must lie inside the
    model's folder, initializers must hold the bytes they declare, constant shapes must be sane.
    """
    model = load_onnx(path)
    screen_model(model, Path(path))
    init_names = {i.name for i in model.graph.initializer}
    inputs = [{"name": i.name, "dtype": _ELEM_TYPES.get(i.type.tensor_type.elem_type, "unknown"),
               "shape": _dims(i.type)} for i in model.graph.input if i.name not in init_names]
    outputs = [{"name": o.name, "dtype": _ELEM_TYPES.get(o.type.tensor_type.elem_type, "unknown"),
                "shape": _dims(o.type)} for o in model.graph.output]
    return {"inputs": inputs, "outputs": outputs, "external_data": external_data_files(model),
            "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)}


# Largest tensor a constant shape in the graph may ask for (ConstantOfShape, Expand, Tile...). Models that
# fit serverless platforms hold well under this; a graph asking for more is broken or an allocation bomb.
MAX_CONSTANT_BYTES = 4 * 1024**3
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def screen_model(model: Any, path: Path) -> None:
    """Refuse what a hostile or damaged file can do before any runtime touches it (exit 2, one line)."""
    folder = Path(path).absolute().parent
    for name in external_data_files(model):
        _check_external_data(Path(path), folder, name)
    for tensor in all_tensors(model):
        _check_declared_size(Path(path), tensor)
    for graph in graphs(model.graph):
        _check_constant_shapes(Path(path), graph)


def _check_external_data(path: Path, folder: Path, name: str) -> None:
    location = Path(name)
    resolved = (folder / location).resolve()
    if location.is_absolute() or ".." in location.parts or not resolved.is_relative_to(folder.resolve()):
        raise SlimserveError(f"{path} refers to external data {name!r} outside its folder",
                             hint="external data files must lie beside the .onnx file (ONNX's rule too)")
    if not resolved.is_file():
        raise SlimserveError(f"{path} refers to external data {name!r} that is not beside it",
                             hint="copy the .onnx file together with its external data files")


def _elements(dims: Any) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


def _check_declared_size(path: Path, init: Any) -> None:
    """An initializer whose dims promise more bytes than it holds (a 40 GB tensor in 16 bytes) is damage
    or an attack: onnxruntime may try to allocate what the dims say."""
    item = _ITEM_BYTES.get(init.data_type)
    if item is None or any(d < 0 for d in init.dims):
        return
    declared = _elements(init.dims) * item
    if init.data_location == 1:  # EXTERNAL: the length field, when present, must cover the tensor
        length = next((int(e.value) for e in init.external_data if e.key == "length" and e.value.isdigit()), None)
        held = length if length is not None else declared
    elif init.raw_data:
        held = len(init.raw_data)
    else:
        return  # typed fields (float_data...): protobuf already holds one value per element
    if held != declared:
        raise SlimserveError(f"{path}: initializer {init.name!r} declares {declared:,} bytes "
                             f"({'x'.join(map(str, init.dims)) or 'scalar'}) but holds {held:,}",
                             hint="the file is damaged or was not written by an ONNX exporter; re-export it")


def _check_constant_shapes(path: Path, graph: Any) -> None:
    """ConstantOfShape/Expand/Tile fed by constant shapes that ask for more than MAX_CONSTANT_BYTES."""
    from onnx import numpy_helper

    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    constants[node.output[0]] = attr.t
    for node in graph.node:
        if node.op_type not in ("ConstantOfShape", "Expand", "Tile") or len(node.input) < 1:
            continue
        shape_input = node.input[0] if node.op_type == "ConstantOfShape" else node.input[1]
        tensor = constants.get(shape_input)
        if tensor is None or _elements(tensor.dims) > 16:
            continue
        try:
            shape = [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
        except (ValueError, TypeError):
            continue
        if any(v < 0 for v in shape):
            continue
        requested = _elements(shape) * 4
        if requested > MAX_CONSTANT_BYTES:
            raise SlimserveError(f"{path}: {node.op_type} node {node.name or node.output[0]!r} asks for a "
                                 f"{'x'.join(map(str, shape))} tensor (at least {requested / 1024**3:,.0f} GiB)",
                                 hint="the graph would exhaust memory at run time; fix or re-export the model")


def needs_external_data(model: Any) -> bool:
    """True when `model` cannot be written as one protobuf (ByteSize itself raises past 2 GB on some builds)."""
    try:
        return bool(model.ByteSize() > PROTOBUF_LIMIT)
    except Exception:  # noqa: BLE001 - protobuf's overflow error type differs between implementations
        return True


def require_file(path: Path, step: str) -> None:
    """SlimserveError (user-fixable) when a step's input model is missing."""
    if not Path(path).is_file():
        raise SlimserveError(f"{step}: input model {path} does not exist", hint="check the model path")


def read_model(path: Path, step: str, *, with_data: bool = True) -> Any:
    """A step's input model (with its external data): SlimserveError if missing, ToolError if unreadable."""
    import onnx

    require_file(path, step)
    try:
        return onnx.load(str(path), load_external_data=with_data)
    except Exception as exc:  # DecodeError, OSError, ValueError...: all mean "unreadable"
        raise ToolError(f"{step}: onnx cannot read {path}: {first_line(exc)}",
                        hint="is this a valid ONNX file?") from exc


def save_model(model: Any, path: Path, step: str = "onnx") -> Path:
    """Write `model` to `path`; its tensors go to one `<name>.data` file beside it only past 2 GB.

    `model_files(path)` lists what was written. Failures are a one-line ToolError naming `step`.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if needs_external_data(model):
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
        else:
            onnx.save_model(model, str(path))
    except Exception as exc:
        raise ToolError(f"{step}: onnx cannot write {path}: {first_line(exc)}") from exc
    return path


def model_files(path: Path) -> list[Path]:
    """The model file plus any external data it references (what must travel with it)."""
    model = load_onnx(path)
    return [Path(path)] + [Path(path).parent / f for f in external_data_files(model)]


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"\S+\.(?:cc|cpp|h):\d+ [^(]*\([^)]*\)\s*")


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error as one readable line: no error-code prefix, no C++ source location."""
    from slimserve.errors import first_line

    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = _ORT_PREFIX.sub("", text)
    for marker in ("Status Message: ", "failed:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    return first_line(_ORT_SOURCE.sub("", text).strip() or exc)


def ort_session(path: Path, threads: int = 0, *, user_model: bool = False) -> Any:
    """A CPU session with a one-line error if onnxruntime refuses the model.

    `user_model`: the file is the user's input, so a refusal is bad input (exit 2); a file slimserve wrote
    that onnxruntime refuses is a tool failure (exit 1).
    """
    import onnxruntime as ort

    from slimserve.errors import ToolError

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 4  # failures reach the user as our one error line, not as ORT's red log line
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises plain RuntimeError/Fail subclasses
        reason = ort_message(exc)
        if user_model:
            raise SlimserveError(f"onnxruntime cannot load {Path(path).name}: {reason}",
                                 hint="slimserve runs models with onnxruntime's standard and com.microsoft "
                                      "operators; check that the model is valid ONNX") from None
        raise ToolError(f"onnxruntime cannot load {Path(path).name}: {reason}",
                        hint="check that the model is valid ONNX for this onnxruntime version") from exc
