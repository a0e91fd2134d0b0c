"""Hugging Face folder -> ONNX through optimum's exporter, offline, and a PyTorch reference runner."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer.exported import Exported, Feed
from slimserve.optimizer.sources import HfFolderSource
from slimserve.tasks import get_task

RUNTIME_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                 "preprocessor_config.json")
DEFAULT_MAX_LENGTH = 512


def _require_export_extra() -> None:
    try:
        import optimum.exporters.onnx  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise SlimserveError(f"exporting a Hugging Face folder needs the export extra ({exc.name} is missing)",
                             hint="pip install 'slimserve[export]'") from None


def _quiet_libraries() -> None:
    """optimum/transformers log tracing chatter on stderr; slimserve reports progress its own way."""
    import logging

    for name in ("optimum", "transformers", "sentence_transformers", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # transformers is untyped


def export_hf_folder(source: HfFolderSource, work_dir: Path) -> Exported:
    """Export offline (HF_HUB_OFFLINE) so a folder never triggers a download."""
    _require_export_extra()
    from slimserve.optimizer.families.base import family_for

    check_source = getattr(family_for(source.task), "check_source", None)
    if check_source is not None:  # a family refuses what its handler cannot serve before any export
        check_source(source)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from optimum.exporters.onnx import main_export

    out = work_dir / "export"
    _quiet_libraries()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(
                str(source.path), output=str(out), task=get_task(source.task).optimum_task, library_name=source.library,
                do_validation=False, trust_remote_code=source.trust_remote_code, device="cpu",
            )
    except Exception as exc:  # optimum/transformers/safetensors raise many unrelated types
        if "safetensor" in type(exc).__name__.lower() or "header" in str(exc).lower():
            raise SlimserveError(f"cannot read the weights in {source.path}: {first_line(exc)}",
                                 hint="the .safetensors file looks truncated or damaged: download it again") from exc
        if "unsupported architecture" in str(exc) or "only supports the tasks" in str(exc):
            # optimum has no ONNX recipe for this model type (FocalNet, MobileViTV2...): the folder is fine
            model_type = _read_json(source.path / "config.json").get("model_type") or "this"
            raise SlimserveError(f"optimum's ONNX exporter does not support {model_type} models for "
                                 f"{source.task}, so slimserve cannot export {source.path}",
                                 hint="export the model to ONNX yourself (torch.onnx.export) and pass the .onnx "
                                      "file: it is then served as a tensor model") from exc
        if "infer the pad token id" in str(exc):  # a GPT-2-style classifier with no pad token anywhere
            raise SlimserveError(f"{source.path} defines no pad token (config.json pad_token_id, or the "
                                 "tokenizer's): a classifier that reads the last real token needs one to be "
                                 "exported for batches",
                                 hint='set "pad_token_id" in config.json (GPT-2 classifiers use the '
                                      "eos_token_id)") from exc
        raise ToolError(f"optimum could not export {source.path}: {first_line(exc)}",
                        hint="check the folder (config + weights + tokenizer) and --task") from exc
    onnx_path = out / "model.onnx"
    if not onnx_path.is_file():
        raise ToolError(f"optimum's export of {source.path} produced no model.onnx")
    text = get_task(source.task).family == "text"
    if text and not (out / "tokenizer.json").is_file():
        raise SlimserveError(f"{source.path} has no fast tokenizer (tokenizer.json) and none could be built",
                             hint="save the tokenizer with a fast tokenizer (tokenizers library) first")
    from slimserve.optimizer.families.base import family_for

    family = family_for(source.task)
    runtime = _runtime_spec(source, out, text)
    if family is not None:
        runtime = family.runtime_spec(source, out, runtime)
        reference = family.reference(source)
    else:
        reference = _pytorch_reference(source)
    extra = tuple(out / name for name in RUNTIME_FILES if (out / name).is_file())
    return Exported(onnx_path=onnx_path, runtime=runtime, reference=reference, reference_kind="pytorch",
                    extra_files=extra, source_info={"task": source.task, "library": source.library})


# Model types whose position ids start after the pad id (RoBERTa's create_position_ids_from_input_ids):
# max_position_embeddings 514 holds 512 tokens.
_PAD_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                         "data2vec-text", "ibert", "xmod", "mpnet", "longformer", "luke")


def _position_limit(config: dict[str, Any]) -> int:
    """The most tokens the model's position embeddings take. Many tokenizers declare no model_max_length
    (transformers' 1e30 sentinel): on a model with fewer than 512 positions the runtime would otherwise
    let longer texts through and onnxruntime fail on every one of them (a 500, not a truncation)."""
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if isinstance(positions, bool) or not isinstance(positions, int) or positions <= 0:
        return DEFAULT_MAX_LENGTH
    if config.get("model_type") in _PAD_OFFSET_POSITIONS:
        positions -= int(config.get("pad_token_id") or 0) + 1
    return max(1, positions)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _labels(config: dict[str, Any]) -> list[str] | None:
    id2label = config.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    return labels or None


def _runtime_spec(source: HfFolderSource, out: Path, text: bool) -> dict[str, Any]:
    """The runtime section every task starts from: kind, task, labels and (text) the tokenizer and limits."""
    config = _read_json(out / "config.json")
    spec: dict[str, Any] = {"kind": "text" if text else get_task(source.task).family, "task": source.task,
                            "labels": None}
    if config.get("problem_type"):
        spec["problem_type"] = str(config["problem_type"])
    if not text:
        spec["labels"] = _labels(config)
        return spec
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)  # type: ignore[no-untyped-call]  # transformers is untyped
    max_length = min(int(getattr(tokenizer, "model_max_length", DEFAULT_MAX_LENGTH) or DEFAULT_MAX_LENGTH),
                     DEFAULT_MAX_LENGTH, _position_limit(config))
    pad_id, pad_token = tokenizer.pad_token_id, tokenizer.pad_token
    config_pad = config.get("pad_token_id")
    if (source.task in ("text-classification", "text-ranking") and isinstance(config_pad, int)
            and 0 <= config_pad < int(config.get("vocab_size") or len(tokenizer)) and config_pad != pad_id):
        # A decoder's sequence classifier (GPT-2, Llama, Qwen2...) finds each text's last real token as the
        # last one that is not config.pad_token_id, so a batch must be padded with THAT id, even when the
        # tokenizer has no pad token or another one (the pipeline runs texts one by one, unpadded).
        pad_id, pad_token = config_pad, tokenizer.convert_ids_to_tokens(config_pad)
    spec.update({"tokenizer": "tokenizer.json", "pad_id": int(pad_id or 0), "pad_token": str(pad_token or "[PAD]")})
    if source.library == "sentence_transformers":
        st_config = _read_json(source.path / "sentence_bert_config.json")
        max_length = int(st_config.get("max_seq_length", max_length))
        modules = json.loads((source.path / "modules.json").read_text(encoding="utf-8"))
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        spec.update(output="sentence_embedding", pooling="none", normalize=normalize)
    elif source.task == "feature-extraction":
        spec.update(output="last_hidden_state", pooling="mean", normalize=False)
    else:
        spec.update(output="logits", pooling="none", normalize=False, labels=_labels(config))
    spec["max_length"] = max_length
    # The request limits the shipped handler enforces (and `check` measures at their worst), written
    # out so the manifest says what a deployment accepts; see RequestLimits for how they are derived.
    from slimserve.runtime.model_runtime import RequestLimits

    limits = RequestLimits.from_spec(spec, environ={}).as_dict()
    spec.update({key: value for key, value in limits.items() if key != "max_elements"})
    return spec


def _pytorch_reference(source: HfFolderSource) -> Any:
    """The original PyTorch model, run on exactly the token ids the ONNX model sees."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    common = {"local_files_only": True, "trust_remote_code": source.trust_remote_code}
    warnings.filterwarnings("ignore", message=".*torch_dtype.*")
    try:
        if source.library == "sentence_transformers":
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(source.path), device="cpu", local_files_only=True,
                                     trust_remote_code=source.trust_remote_code)
            st.eval()

            def run_st(feed: Feed) -> dict[str, np.ndarray]:
                features = {k: torch.from_numpy(np.asarray(v)) for k, v in feed.items()}
                with torch.inference_mode():
                    out = st(features)
                return {"sentence_embedding": out["sentence_embedding"].float().numpy(),
                        "token_embeddings": out["token_embeddings"].float().numpy()}

            return run_st
        from transformers import AutoModel, AutoModelForSequenceClassification

        cls = AutoModelForSequenceClassification if source.task == "text-classification" else AutoModel
        model = cls.from_pretrained(str(source.path), use_safetensors=not source.allow_pickle or None, **common)
        model.eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ToolError(f"cannot load {source.path} with PyTorch for the reference outputs: {first_line(exc)}") from exc

    def run_hf(feed: Feed) -> dict[str, np.ndarray]:
        inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in feed.items()}
        with torch.inference_mode():
            out = model(**inputs)
        if source.task == "text-classification":
            return {"logits": out.logits.float().numpy()}
        return {"last_hidden_state": out.last_hidden_state.float().numpy()}

    return run_hf
