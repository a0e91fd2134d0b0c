"""`package.module:factory` -> nn.Module -> ONNX with torch's exporter, and the module as reference."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer.exported import Exported, Feed
from slimserve.optimizer.sources import TorchSource

OPSET = 17


def _load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:  # like `python -m`: modules in the working directory are importable
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SlimserveError(f"cannot import {module_name!r} for {spec}: {first_line(exc)}",
                             hint="run from the folder that holds the module, or install its package") from None
    except Exception as exc:  # the user's module raised while importing
        raise SlimserveError(f"importing {module_name!r} raised {type(exc).__name__}: {first_line(exc)}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise SlimserveError(f"{module_name!r} has no callable {attr!r}")
    return factory


def build_module(spec: str) -> Any:
    import torch

    factory = _load_factory(spec)
    try:
        module = factory()
    except Exception as exc:  # anything the user's factory raises is reported, not a crash
        raise SlimserveError(f"factory {spec} raised {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise SlimserveError(f"factory {spec} returned {type(module).__name__}, not a torch.nn.Module")
    return module.eval()


def _input_names(module: Any, count: int) -> list[str]:
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params[:count]]
    except (TypeError, ValueError):
        names = []
    return names if len(names) == count else [f"input_{i}" for i in range(count)]


def _image_runtime(source: TorchSource, outputs: Any, output_names: list[str]) -> dict[str, Any]:
    """An image classifier factory: its declared preprocessing, served by the image handler (task_image)."""
    from slimserve.runtime.task_image import (
        DEFAULT_MAX_BATCH,
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_REQUEST_PIXELS,
        FORMATS,
    )

    assert source.image is not None
    shape = tuple(outputs[0].shape)
    if len(source.input_shapes) != 1 or len(shape) != 2:
        raise SlimserveError(f"{source.factory} is not an image classifier: it takes {len(source.input_shapes)} "
                             f"input(s) and its first output has shape {list(shape)}",
                             hint="--image-size serves a module mapping one 1x3xHxW tensor to 1xN logits")
    labels = source.image.get("labels")
    if labels is not None and len(labels) != shape[1]:
        raise SlimserveError(f"--labels names {len(labels)} classes but {source.factory} outputs {shape[1]} logits")
    image = {key: value for key, value in source.image.items() if key != "labels"}
    image.update(formats=list(FORMATS), max_pixels=DEFAULT_MAX_PIXELS,
                 max_request_pixels=DEFAULT_MAX_REQUEST_PIXELS)
    return {"kind": "image", "task": "image-classification", "labels": labels, "output": output_names[0],
            "max_batch": DEFAULT_MAX_BATCH, "image": image}


def export_torch_module(source: TorchSource, work_dir: Path) -> Exported:
    try:
        import torch
    except ImportError:
        raise SlimserveError("exporting a PyTorch module needs torch", hint="pip install 'slimserve[export]'") from None
    module = build_module(source.factory)
    dtype = getattr(torch, source.input_dtype)
    generator = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        dummies = tuple(torch.randn(shape, generator=generator).to(dtype) for shape in source.input_shapes)
    else:
        dummies = tuple(torch.randint(0, 2, shape, generator=generator).to(dtype) for shape in source.input_shapes)
    names = _input_names(module, len(dummies))
    out_path = work_dir / "export" / "model.onnx"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample_out = module(*dummies)
            outputs = sample_out if isinstance(sample_out, (tuple, list)) else (sample_out,)
            output_names = [f"output_{i}" for i in range(len(outputs))]
            torch.onnx.export(
                module, dummies, str(out_path), dynamo=False, opset_version=OPSET,
                input_names=names, output_names=output_names,
                dynamic_axes={n: {0: "batch"} for n in names + output_names},
            )
    except Exception as exc:  # torch's exporter raises many unrelated types
        raise ToolError(f"torch could not export {source.factory} to ONNX: {first_line(exc)}",
                        hint="check --input-shape/--input-dtype match what forward() expects") from exc

    def run_module(feed: Feed) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names]
        with torch.no_grad():
            result = module(*tensors)
        values = result if isinstance(result, (tuple, list)) else (result,)
        return {n: v.detach().float().numpy() for n, v in zip(output_names, values)}

    runtime: dict[str, Any] = {"kind": "tensor", "task": "tensor", "max_batch": 64}
    if source.image is not None:
        runtime = _image_runtime(source, outputs, output_names)
    return Exported(onnx_path=out_path, runtime=runtime, reference=run_module, reference_kind="pytorch",
                    input_shapes=source.input_shapes, input_dtype=source.input_dtype,
                    source_info={"factory": source.factory, "input_shapes": ["x".join(map(str, s)) for s in source.input_shapes],
                                 "input_dtype": source.input_dtype})
