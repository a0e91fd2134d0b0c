"""Reading ONNX files safely: a clear error for empty, truncated or non-ONNX input, never a traceback."""

from __future__ import annotations

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
    """Inputs, outputs (name, dtype, shape) and external data of a model file, without loading weights."""
    model = load_onnx(path)
    init_names = {i.name for i in model.graph.initializer}
    inputs = [{"name": i.name, "dtype": _ELEM_TYPES.get(i.type.tensor_type.elem_type, "unknown"),
               "shape": _dims(i.type)} for i in model.graph.input if i.name not in init_names]
    outputs = [{"name": o.name, "dtype": _ELEM_TYPES.get(o.type.tensor_type.elem_type, "unknown"),
                "shape": _dims(o.type)} for o in model.graph.output]
    missing = [f for f in external_data_files(model) if not (Path(path).parent / f).is_file()]
    if missing:
        raise SlimserveError(f"{path} refers to external data {missing[0]!r} that is not beside it",
                             hint="copy the .onnx file together with its external data files")
    return {"inputs": inputs, "outputs": outputs, "external_data": external_data_files(model),
            "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)}


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


def ort_session(path: Path, threads: int = 0) -> Any:
    """A CPU session with a one-line error if onnxruntime refuses the model."""
    import onnxruntime as ort

    from slimserve.errors import ToolError, first_line

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises plain RuntimeError/Fail subclasses
        raise ToolError(f"onnxruntime cannot load {Path(path).name}: {first_line(exc)}",
                        hint="check that the model is valid ONNX for this onnxruntime version") from exc
