"""What every Hugging Face family shares on the optimizer side: the original PyTorch model as a reference
runner, and reading the user's --eval file."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer.exported import ReferenceRunner
from slimserve.optimizer.sources import HfFolderSource


def pytorch_reference(source: HfFolderSource, auto_class: str,
                      outputs: Callable[[Any], dict[str, np.ndarray]]) -> ReferenceRunner:
    """transformers' `auto_class` (e.g. "AutoModelForTokenClassification") loaded from the folder, run on
    exactly the feeds the ONNX model gets; `outputs` names its results like the ONNX outputs."""
    import torch
    import transformers

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = getattr(transformers, auto_class).from_pretrained(
                str(source.path), local_files_only=True, trust_remote_code=source.trust_remote_code,
                use_safetensors=not source.allow_pickle or None)
        model.eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ToolError(f"cannot load {source.path} with PyTorch for the reference outputs: "
                        f"{first_line(exc)}") from exc

    def run(feed: Any) -> dict[str, np.ndarray]:
        inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in feed.items()}
        with torch.inference_mode():
            return outputs(model(**inputs))

    return run


def logits(out: Any) -> dict[str, np.ndarray]:
    """The `logits` output (classification heads)."""
    return {"logits": out.logits.float().numpy()}


def read_eval_file(eval_path: Path, hint: str) -> str:
    """The --eval file's text, or one clear error."""
    try:
        return Path(eval_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlimserveError(f"cannot read --eval file {eval_path}: {exc}", hint=hint) from None
