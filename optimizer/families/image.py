"""Image classification (`AutoModelForImageClassification` folders): preprocessing, reference and fidelity.

The runtime section's `image.steps` spell out, in order, what the folder's transformers image processor
does to a decoded RGB image (slimserve/runtime/task_image.py applies them with the same PIL calls and numpy
numerics). They are read from the processor transformers itself builds from preprocessor_config.json,
so class defaults, legacy `size` forms (an int, `use_square_size`) and crop_pct are resolved exactly as
transformers resolves them. A processor class whose steps are not reproduced here is refused before export.

Fidelity is `top1_agreement` (per image: the served top label equals the PyTorch model's), with the top-5
overlap and the logit cosine (mean and worst) in details.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer.exported import Feed, ReferenceRunner
from slimserve.optimizer.families.base import EvalBatch, EvalSet
from slimserve.optimizer.fidelity import Fidelity, per_sample_cosine
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime import task_image
from slimserve.runtime.model_runtime import InputError, LoadedModel, RequestLimits

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
PREPROCESSOR = "preprocessor_config.json"
SAMPLE_IMAGE = DATA_DIR / "eval" / "00-shapes.jpg"  # 224 × 224 JPEG, ~4 kB
TOP_K = 5

Steps = list[dict[str, Any]]


def _hw(size: Any, what: str) -> dict[str, int]:
    if isinstance(size, dict) and "height" in size and "width" in size:
        return {"height": int(size["height"]), "width": int(size["width"])}
    raise SlimserveError(f"{PREPROCESSOR}: {what} {size!r} has no height/width, which this image processor needs",
                         hint="fix the preprocessor config (the processor would fail the same way in transformers)")


def _resize_hw(proc: Any) -> Steps:
    return [{"op": "resize", **_hw(proc.size, "size"), "resample": int(proc.resample)}] if proc.do_resize else []


def _resize_edge_or_hw(proc: Any) -> Steps:
    """Bit/CLIP/MobileNet/MobileViT resize: shortest edge kept in ratio, or an exact height × width."""
    if not proc.do_resize:
        return []
    size = proc.size
    if isinstance(size, dict) and "shortest_edge" in size:
        return [{"op": "resize", "shortest_edge": int(size["shortest_edge"]), "resample": int(proc.resample)}]
    return [{"op": "resize", **_hw(size, "size"), "resample": int(proc.resample)}]


def _crop(proc: Any) -> Steps:
    return [{"op": "center_crop", **_hw(proc.crop_size, "crop_size")}] if proc.do_center_crop else []


def _rescale(proc: Any) -> Steps:
    return [{"op": "rescale", "factor": float(proc.rescale_factor)}] if proc.do_rescale else []


def _channels(value: Any) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * 3
    if len(values) != 3:
        raise SlimserveError(f"{PREPROCESSOR}: image_mean/image_std {value!r} do not have 3 channels",
                             hint="slimserve serves RGB image classifiers")
    return [float(v) for v in values]


def _normalize(proc: Any) -> Steps:
    if not proc.do_normalize:
        return []
    return [{"op": "normalize", "mean": _channels(proc.image_mean), "std": _channels(proc.image_std)}]


def _vit(proc: Any) -> Steps:
    return _resize_hw(proc) + _rescale(proc) + _normalize(proc)


def _deit(proc: Any) -> Steps:  # also BEiT/Data2Vec-vision: resize to height × width, then crop
    return _resize_hw(proc) + _crop(proc) + _rescale(proc) + _normalize(proc)


def _bit(proc: Any) -> Steps:  # also CLIP, MobileNetV2 (Dinov2, FocalNet, Hiera use BitImageProcessor)
    return _resize_edge_or_hw(proc) + _crop(proc) + _rescale(proc) + _normalize(proc)


def _convnext(proc: Any) -> Steps:  # also ResNet, RegNet, ConvNeXt V2, CvT, VAN
    """ConvNextImageProcessor.resize: below 384, the shortest edge goes to edge / crop_pct then a square
    center crop of edge; from 384 on, a warp to edge × edge."""
    steps: Steps = []
    if proc.do_resize:
        if not isinstance(proc.size, dict) or "shortest_edge" not in proc.size:
            raise SlimserveError(f"{PREPROCESSOR}: ConvNextImageProcessor needs size.shortest_edge, got {proc.size!r}")
        edge = int(proc.size["shortest_edge"])
        resample = int(proc.resample)
        if edge < 384:
            if proc.crop_pct is None:
                raise SlimserveError(f"{PREPROCESSOR}: crop_pct is required when shortest_edge < 384")
            steps = [{"op": "resize", "shortest_edge": int(edge / proc.crop_pct), "resample": resample},
                     {"op": "center_crop", "height": edge, "width": edge}]
        else:
            steps = [{"op": "resize", "height": edge, "width": edge, "resample": resample}]
    return steps + _rescale(proc) + _normalize(proc)


def _levit(proc: Any) -> Steps:
    """LevitImageProcessor.resize: a `shortest_edge` is first scaled to int(edge * 256 / 224) (LeViT's
    resize-then-crop ratio); otherwise the BiT steps."""
    if proc.do_resize and isinstance(proc.size, dict) and "shortest_edge" in proc.size:
        edge = int((256 / 224) * proc.size["shortest_edge"])
        resize: Steps = [{"op": "resize", "shortest_edge": edge, "resample": int(proc.resample)}]
    else:
        resize = _resize_edge_or_hw(proc)
    return resize + _crop(proc) + _rescale(proc) + _normalize(proc)


def _mobilevit(proc: Any) -> Steps:
    """MobileViTImageProcessor: rescale comes BEFORE the crop, no normalisation, and RGB -> BGR."""
    flip = [{"op": "flip_channel_order"}] if proc.do_flip_channel_order else []
    return _resize_edge_or_hw(proc) + _rescale(proc) + _crop(proc) + flip


# Slow (PIL) image processor class -> its steps. Fast (torchvision) variants are read as their slow class:
# without torchvision transformers itself falls back to the slow one (with torchvision, its outputs differ
# slightly from the slow path, by transformers' own account).
PROCESSORS: dict[str, Callable[[Any], Steps]] = {
    "ViTImageProcessor": _vit,
    "SegformerImageProcessor": _vit,  # the same steps (its label reduction only touches segmentation maps)
    "DeiTImageProcessor": _deit,
    "BeitImageProcessor": _deit,
    "BitImageProcessor": _bit,
    "CLIPImageProcessor": _bit,
    "MobileNetV2ImageProcessor": _bit,
    "ConvNextImageProcessor": _convnext,
    "MobileViTImageProcessor": _mobilevit,
    "LevitImageProcessor": _levit,
}


def _processor_type(folder: Path) -> str:
    path = folder / PREPROCESSOR
    if not path.is_file():
        raise SlimserveError(f"{folder} has no {PREPROCESSOR}: slimserve cannot know how this image model "
                             "expects its images resized and normalised",
                             hint="save the model's image processor beside it (image_processor.save_pretrained(folder))")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlimserveError(f"{path} is not valid JSON: {exc}") from None
    name = str(config.get("image_processor_type") or config.get("feature_extractor_type") or "")
    name = name.removesuffix("Fast").replace("FeatureExtractor", "ImageProcessor")
    if name not in PROCESSORS:
        raise SlimserveError(f"{path}: image processor {name or '(none named)'} is not one slimserve reproduces "
                             "exactly in its handler",
                             hint=f"supported: {', '.join(sorted(PROCESSORS))}; or export the model yourself and "
                                  "serve it as a tensor model")
    return name


def load_processor(folder: Path) -> tuple[str, Any]:
    """The processor transformers builds for `folder` (slow class), after its type was accepted."""
    name = _processor_type(folder)
    from transformers import AutoImageProcessor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proc = AutoImageProcessor.from_pretrained(str(folder), use_fast=False,  # type: ignore[no-untyped-call]
                                                     local_files_only=True)
    except Exception as exc:  # noqa: BLE001  # transformers raises many types on a bad config
        raise SlimserveError(f"transformers cannot load {folder / PREPROCESSOR}: {first_line(exc)}") from None
    actual = type(proc).__name__
    if actual != name:
        raise SlimserveError(f"{folder / PREPROCESSOR} names {name} but transformers built {actual}",
                             hint="set image_processor_type to the processor the model was trained with")
    return name, proc


def preprocessing_steps(folder: Path) -> tuple[str, Steps]:
    """(processor class, the steps the handler applies) for an image model folder; SlimserveError if unsure."""
    name, proc = load_processor(folder)
    steps = PROCESSORS[name](proc)
    task_image.Preprocessor({"steps": steps})  # the shipped runtime must accept what it will be given
    return name, steps


RESAMPLE_NAMES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def declared_image(image_size: int, resize: int | None, mean: Sequence[float], std: Sequence[float],
                   labels: Path | None, resample: str = "bilinear") -> dict[str, Any]:
    """The runtime `image` section of a PyTorch factory whose preprocessing is declared on the command line:
    torchvision's `Compose([Resize(resize, interpolation), CenterCrop(image_size), ToTensor(),
    Normalize(mean, std)])` on a PIL RGB image, reproduced exactly (PIL resize, torchvision's crop offsets,
    float32 division by 255)."""
    if image_size < 1:
        raise SlimserveError(f"--image-size must be positive, got {image_size}")
    edge = image_size if resize is None else resize
    if edge < image_size:
        raise SlimserveError(f"--resize {edge} is smaller than --image-size {image_size}",
                             hint="--resize is the shortest edge before the center crop of --image-size")
    if resample not in RESAMPLE_NAMES:
        raise SlimserveError(f"unknown --resample {resample!r}", hint=f"choose one of {', '.join(RESAMPLE_NAMES)}")
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) != 3:
            raise SlimserveError(f"{name} needs 3 comma-separated numbers (R,G,B), got {len(values)}")
    if any(v == 0 for v in std):
        raise SlimserveError("--std must not contain 0")
    steps: Steps = [{"op": "resize", "shortest_edge": edge, "resample": RESAMPLE_NAMES[resample]},
                    {"op": "center_crop", "height": image_size, "width": image_size, "rounding": "torchvision"},
                    {"op": "rescale", "divide": 255.0},
                    {"op": "normalize", "mean": [float(v) for v in mean], "std": [float(v) for v in std]}]
    task_image.Preprocessor({"steps": steps})
    return {"processor": "declared (torchvision Resize + CenterCrop + ToTensor + Normalize)", "steps": steps,
            "labels": read_labels(labels) if labels is not None else None}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def factory_image(image_size: int | None, resize: int | None, mean: Sequence[float] | None,
                  std: Sequence[float] | None, labels: Path | None, resample: str | None) -> dict[str, Any] | None:
    """The command line's declared image preprocessing (None when no image option was given)."""
    if image_size is None:
        given = [name for name, value in (("--resize", resize), ("--mean", mean), ("--std", std),
                                          ("--labels", labels), ("--resample", resample)) if value is not None]
        if given:
            raise SlimserveError(f"{given[0]} needs --image-size", hint="e.g. --image-size 224 --resize 256")
        return None
    return declared_image(image_size, resize, mean or IMAGENET_MEAN, std or IMAGENET_STD, labels,
                          resample or "bilinear")


def read_labels(path: Path) -> list[str]:
    """Class names, index order: a text file with one per line, or JSON (a list, or {"0": name, ...})."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlimserveError(f"cannot read --labels {path}: {exc}") from None
    if Path(path).suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SlimserveError(f"--labels {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            try:
                return [str(data[k]) for k in sorted(data, key=int)]
            except ValueError:
                raise SlimserveError(f"--labels {path}: keys must be class indices") from None
        if isinstance(data, list):
            return [str(v) for v in data]
        raise SlimserveError(f"--labels {path} must hold a list of names or an index -> name object")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise SlimserveError(f"--labels {path} is empty", hint="one class name per line, in output order")
    return labels


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_image_folder(folder: Path) -> list[str]:
    """Every file of `folder` as a base64 request item; one clear error for a file that is not an image."""
    if not folder.is_dir():
        raise SlimserveError(f"--eval {folder}: image models are evaluated on a FOLDER of images",
                             hint="pass a folder of .jpg/.png/.webp files")
    files = _image_files(folder)
    if not files:
        raise SlimserveError(f"--eval {folder} holds no files", hint="put a few representative images in it")
    items = []
    limits = task_image.PixelLimits.from_spec({}, environ={})
    for path in files:
        data = path.read_bytes()
        try:
            task_image.load_rgb(task_image.open_image(data, 0, limits), 0)
        except InputError as exc:
            reason = str(exc).removeprefix("inputs[0] ")
            raise SlimserveError(f"--eval {folder}: {path.name} {reason}",
                                 hint=f"keep only images ({', '.join(task_image.FORMATS)}) in the folder") from None
        items.append(base64.b64encode(data).decode("ascii"))
    return items


class ImageFamily:
    tasks = ("image-classification",)

    def check_source(self, source: HfFolderSource) -> None:
        """Refuse, before any export, a folder whose preprocessing the handler cannot reproduce."""
        preprocessing_steps(source.path)

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        name, steps = preprocessing_steps(source.path)
        spec = dict(base)
        spec.update({"kind": "image", "output": "logits", "max_batch": task_image.DEFAULT_MAX_BATCH,
                     "image": {"processor": name, "steps": steps, "formats": list(task_image.FORMATS),
                               "max_pixels": task_image.DEFAULT_MAX_PIXELS,
                               "max_request_pixels": task_image.DEFAULT_MAX_REQUEST_PIXELS}})
        return spec

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        import torch
        from transformers import AutoModelForImageClassification

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        try:
            model = AutoModelForImageClassification.from_pretrained(
                str(source.path), local_files_only=True, trust_remote_code=source.trust_remote_code,
                use_safetensors=not source.allow_pickle or None)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ToolError(f"cannot load {source.path} with PyTorch for the reference outputs: {first_line(exc)}") from exc
        model.eval()

        def run(feed: Feed) -> dict[str, np.ndarray]:
            pixels = torch.from_numpy(np.ascontiguousarray(feed["pixel_values"], dtype=np.float32))
            with torch.inference_mode():
                out = model(pixel_values=pixels)
            return {"logits": out.logits.float().numpy()}

        return run

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        """One image per request (preprocessing may give images different sizes): the built-in eval and
        calibration images are generated by benchmarks/make_eval_images.py; --eval is a folder."""
        if eval_path is not None:
            items = load_image_folder(Path(eval_path))
            return EvalSet(requests=[[i] for i in items], calibration=[[i] for i in items],
                           description=f"{eval_path} ({len(items)} images)")
        evaluation = load_image_folder(DATA_DIR / "eval")
        calibration = load_image_folder(DATA_DIR / "calib")
        return EvalSet(requests=[[i] for i in evaluation], calibration=[[i] for i in calibration],
                       description=f"built-in images ({len(evaluation)} generated images)")

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """`batch` copies of a 224 × 224 JPEG (the built-in one a phone-sized request resembles)."""
        item = base64.b64encode(SAMPLE_IMAGE.read_bytes()).decode("ascii")
        return [item] * batch

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """As many images as `max_batch` and `max_request_pixels` allow, each `max_pixels` large (a smooth
        JPEG: small on the wire, full cost to decode and resize)."""
        image = runtime.get("image") or {}
        pixels = task_image.PixelLimits.from_spec(image if isinstance(image, dict) else {}, environ={})
        per_image = min(pixels.max_pixels, pixels.max_request_pixels)
        count = max(1, min(limits.max_batch, pixels.max_request_pixels // per_image))
        width = math.isqrt(per_image)
        height = per_image // width
        item = base64.b64encode(_smooth_jpeg(width, height)).decode("ascii")
        return [item] * count, f"{count} JPEG images × {width}x{height} pixels ({width * height:,} each)"

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        params = model.parameters({"top_k": TOP_K})
        top1: list[float] = []
        top5: list[float] = []
        ref_logits, cand_logits = [], []
        for batch in batches:
            ref = task_image.decode(model, batch.reference, batch.encoded, params)
            cand = task_image.decode(model, batch.candidate, batch.encoded, params)
            refs, cands = (([ref], [cand]) if batch.encoded.single else (ref, cand))
            for r, c in zip(refs, cands):
                top1.append(float(r[0]["label"] == c[0]["label"]))
                k = len(r)
                top5.append(len({x["label"] for x in r} & {x["label"] for x in c}) / k)
            ref_logits.append(task_image.logits_of(model, batch.reference))
            cand_logits.append(task_image.logits_of(model, batch.candidate))
        if not top1:
            raise ValueError("no evaluation images")
        reference = np.concatenate(ref_logits)
        candidate = np.concatenate(cand_logits)
        if reference.shape != candidate.shape:
            raise ValueError(f"logits changed shape: {reference.shape} -> {candidate.shape}")
        cosine = per_sample_cosine(reference, candidate)
        agree = np.asarray(top1)
        output = str(model.spec.get("output") or "logits")
        return Fidelity(metric="top1_agreement", output=output, mean=round(float(agree.mean()), 6),
                        min=round(float(agree.min()), 6), samples=len(top1), reference=reference_name,
                        eval_source=eval_source, top1_agreement=round(float(agree.mean()), 6),
                        details={"top5_overlap": round(float(np.mean(top5)), 6),
                                 "top5_overlap_min": round(float(np.min(top5)), 6),
                                 "logit_cosine_mean": round(float(cosine.mean()), 6),
                                 "logit_cosine_min": round(float(cosine.min()), 6)})


def _smooth_jpeg(width: int, height: int) -> bytes:
    """A gradient JPEG of the given size, built row by row (never a full float image in memory)."""
    from PIL import Image

    row = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)
    column = np.linspace(0, 255, height, dtype=np.float32).astype(np.uint8)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = row[None, :]
    rgb[..., 1] = column[:, None]
    rgb[..., 2] = 128
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


FAMILY = ImageFamily()
