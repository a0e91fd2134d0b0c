"""Reading ONNX files safely: a clear error for empty, truncated or non-ONNX input, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError

TWO_GB = 2 * 1024**3

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


def external_data_files(model: Any) -> list[str]:
    """Names of the external data files the model's initializers point to (relative to the model)."""
    names: set[str] = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
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
    for init in model.graph.initializer:
        _check_declared_size(Path(path), init)
    _check_constant_shapes(Path(path), model)


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


def _check_constant_shapes(path: Path, model: Any) -> None:
    """ConstantOfShape/Expand/Tile fed by constant shapes that ask for more than MAX_CONSTANT_BYTES."""
    from onnx import numpy_helper

    constants = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    constants[node.output[0]] = attr.t
    for node in model.graph.node:
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


def save_model(model: Any, path: Path) -> list[Path]:
    """Save, switching to one external data file only when the protobuf would exceed 2 GB.

    Returns the files written (the model and, if any, its data file).
    """
    import onnx

    path = Path(path)
    if model.ByteSize() < TWO_GB - 64 * 1024**2:
        onnx.save_model(model, str(path))
        return [path]
    data_name = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    return [path, path.parent / data_name]


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
