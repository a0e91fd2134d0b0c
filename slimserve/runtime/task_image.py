"""Image classification: image files in, `[{"label", "score"}, ...]` out, like transformers' pipeline.

Shipped beside `model_runtime.py`; imports only the standard library, numpy and Pillow.

Request (Hugging Face Inference API shape): `{"inputs": ["<base64 image file>", ...], "parameters":
{"top_k": 5, "function_to_apply": "softmax"}}`. A string may carry a `data:image/...;base64,` prefix.
Over HTTP a raw `image/*` body is one image (lambda_handler.raw_payload passes it as `[bytes]`).
Answer: per image, the `top_k` best `{"label", "score"}` (default 5, at most the number of labels; `null`
means the default, as in the pipeline), sorted by score. One image (a string, or a raw body) gets the
pipeline's single-input answer: that image's list, not a list of lists.

Preprocessing reproduces the model's transformers image processor (its slow, PIL-based path, the one
transformers uses when torchvision is absent), step by step as the manifest's `runtime.image.steps` list
them, with the same Pillow calls and numpy numerics:
  load          Image.open -> ImageOps.exif_transpose -> convert("RGB")   (transformers.image_utils.load_image)
  resize        PIL Image.resize on the uint8 RGB image, same filter id; `height`/`width`, or
                `shortest_edge` (long side int(edge * long / short), get_resize_output_image_size)
  center_crop   transformers.image_transforms.center_crop, zero padding when the crop is larger
                (`"rounding": "torchvision"`: torchvision's CenterCrop offsets and padding instead)
  rescale       float64 multiply, then float32 (`"divide"`: float32 division, torchvision's ToTensor)
  normalize     (x - mean) / std in float32, channels last
  flip_channel_order  RGB -> BGR (MobileViT)
then channels first, stacked into `pixel_values`.

Limits (400/413 before work is done): at most `max_batch` images; each image's width × height, read from
its header BEFORE any pixel is decoded, at most `max_pixels` (SLIMSERVE_MAX_PIXELS); all images of a request
together at most `max_request_pixels` (SLIMSERVE_MAX_REQUEST_PIXELS). Only JPEG, PNG, WebP, GIF and BMP are
opened (Pillow is never asked to guess among its other decoders). Payload size: AWS Lambda refuses
request bodies over 6 MB (synchronous invocation) before this code runs: API Gateway/function URLs answer
413 "Request Entity Too Large"; base64 grows a file by 4/3, so a JSON request carries ~4.5 MB of images.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

if __package__:
    from .model_runtime import Encoded, InputError, LimitError, RequestLimits, env_limit
else:  # flat in the artifact
    from model_runtime import Encoded, InputError, LimitError, RequestLimits, env_limit  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .model_runtime import LoadedModel

TASKS = ("image-classification",)
DEFAULT_TOP_K = 5
PARAMETERS: dict[str, dict[str, Any]] = {"image-classification": {"top_k": DEFAULT_TOP_K, "function_to_apply": None}}
FUNCTIONS = ("softmax", "sigmoid", "none")

# Pillow decoders the handler may use (Image.open tries only these): the formats browsers and phones send.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Recognised but refused, so the caller learns why rather than "not an image".
_UNSUPPORTED_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"),
                      (b"%PDF", "PDF"), (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF",
                b"avis": "AVIF"}

DEFAULT_MAX_PIXELS = 25_000_000          # a 24 MP camera photo (6000 × 4000); ~75 MB once decoded to RGB
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000  # all images of one request together
DEFAULT_MAX_BATCH = 16
PIXEL_ENV = {"max_pixels": "SLIMSERVE_MAX_PIXELS", "max_request_pixels": "SLIMSERVE_MAX_REQUEST_PIXELS"}
RESAMPLE_FILTERS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
STEP_OPS = ("resize", "center_crop", "rescale", "normalize", "flip_channel_order")


@dataclass(frozen=True)
class PixelLimits:
    max_pixels: int
    max_request_pixels: int

    @classmethod
    def from_spec(cls, image: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> PixelLimits:
        env = os.environ if environ is None else environ
        return cls(*(env_limit(env.get(PIXEL_ENV[key]), image.get(key), default, PIXEL_ENV[key])
                     for key, default in (("max_pixels", DEFAULT_MAX_PIXELS),
                                          ("max_request_pixels", DEFAULT_MAX_REQUEST_PIXELS))))


class Preprocessor:
    """The manifest's preprocessing steps, validated once at load, applied to each decoded image."""

    def __init__(self, image: Mapping[str, Any]) -> None:
        steps = image.get("steps")
        if not isinstance(steps, list):
            raise TypeError("runtime.image.steps must be a list")
        numeric = False
        for step in steps:
            op = step.get("op") if isinstance(step, dict) else None
            if op not in STEP_OPS:
                raise ValueError(f"unknown image step {op!r} (this runtime knows {', '.join(STEP_OPS)})")
            if op == "resize":
                if numeric:  # transformers would round-trip float pixels through uint8 here; never emitted
                    raise ValueError("a resize after rescale/normalize is not supported")
                if int(step.get("resample", 2)) not in RESAMPLE_FILTERS:
                    raise ValueError(f"unknown resample filter {step.get('resample')!r}")
            numeric = numeric or op in ("rescale", "normalize")
        self.steps: list[dict[str, Any]] = list(steps)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """pixel_values of one RGB image: float32, channels first."""
        array: np.ndarray | None = None
        for step in self.steps:
            op = step["op"]
            if op == "resize":
                if array is not None:
                    image = Image.fromarray(array)
                    array = None
                image = _resize(image, step)
                continue
            if array is None:
                array = np.asarray(image)
            if op == "center_crop":
                crop = center_crop_torchvision if step.get("rounding") == "torchvision" else center_crop
                array = crop(array, int(step["height"]), int(step["width"]))
            elif op == "rescale" and "divide" in step:
                array = array.astype(np.float32) / np.float32(step["divide"])
            elif op == "rescale":
                array = (array.astype(np.float64) * float(step["factor"])).astype(np.float32)
            elif op == "normalize":
                if not np.issubdtype(array.dtype, np.floating):
                    array = array.astype(np.float32)
                mean = np.asarray(step["mean"], dtype=array.dtype)
                std = np.asarray(step["std"], dtype=array.dtype)
                array = (array - mean) / std
            elif op == "flip_channel_order":
                array = array[..., ::-1]
        if array is None:
            array = np.asarray(image)
        return np.ascontiguousarray(array.transpose(2, 0, 1)).astype(np.float32, copy=False)


def _resize(image: Image.Image, step: Mapping[str, Any]) -> Image.Image:
    width, height = image.size
    if "shortest_edge" in step:
        size = int(step["shortest_edge"])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
    else:
        new_height, new_width = int(step["height"]), int(step["width"])
    return image.resize((new_width, new_height), resample=Image.Resampling(int(step.get("resample", 2))))


def center_crop(array: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """transformers.image_transforms.center_crop on a channels-last array (zero padding included)."""
    height, width = array.shape[:2]
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    bottom, right = top + crop_height, left + crop_width
    if top >= 0 and bottom <= height and left >= 0 and right <= width:
        return array[top:bottom, left:right]
    new_height, new_width = max(crop_height, height), max(crop_width, width)
    padded = np.zeros((new_height, new_width, *array.shape[2:]), dtype=array.dtype)
    top_pad = -(-(new_height - height) // 2)
    left_pad = -(-(new_width - width) // 2)
    padded[top_pad:top_pad + height, left_pad:left_pad + width] = array
    top, bottom, left, right = top + top_pad, bottom + top_pad, left + left_pad, right + left_pad
    return padded[max(0, top):min(new_height, bottom), max(0, left):min(new_width, right)]


def center_crop_torchvision(array: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """torchvision.transforms.functional.center_crop on a channels-last array: zero padding split with the
    extra pixel after, then offsets int(round((size - crop) / 2))."""
    height, width = array.shape[:2]
    pad_h = ((crop_height - height) // 2, (crop_height - height + 1) // 2) if crop_height > height else (0, 0)
    pad_w = ((crop_width - width) // 2, (crop_width - width + 1) // 2) if crop_width > width else (0, 0)
    if pad_h != (0, 0) or pad_w != (0, 0):
        array = np.pad(array, (pad_h, pad_w, *([(0, 0)] * (array.ndim - 2))))
        height, width = array.shape[:2]
    top = round((height - crop_height) / 2.0)
    left = round((width - crop_width) / 2.0)
    return array[top:top + crop_height, left:left + crop_width]


_STATE: weakref.WeakKeyDictionary[Any, tuple[Preprocessor, PixelLimits]] = weakref.WeakKeyDictionary()


def setup(model: LoadedModel) -> None:
    """Validate the preprocessing and read the pixel limits once, at load (a bad manifest fails init)."""
    image = model.spec.get("image")
    if not isinstance(image, dict):
        raise TypeError("the manifest's runtime section has no image preprocessing (runtime.image)")
    _STATE[model] = (Preprocessor(image), PixelLimits.from_spec(image))


def _state(model: LoadedModel) -> tuple[Preprocessor, PixelLimits]:
    if model not in _STATE:
        setup(model)
    return _STATE[model]


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    top_k = values["top_k"]
    if top_k is None:  # the pipeline's _sanitize_parameters drops a None top_k: the default applies
        values["top_k"] = DEFAULT_TOP_K
    elif isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError('"top_k" must be a positive integer')
    function = values["function_to_apply"]
    if function is not None and (not isinstance(function, str) or function.lower() not in FUNCTIONS):
        raise InputError(f'"function_to_apply" must be one of {", ".join(FUNCTIONS)}')
    values["function_to_apply"] = function.lower() if isinstance(function, str) else None
    return values


def image_items(inputs: Any) -> tuple[list[str | bytes], bool]:
    """The request's images and whether one image was sent (a string, raw bytes, or one raw body)."""
    if isinstance(inputs, (str, bytes, bytearray)):
        return [bytes(inputs) if not isinstance(inputs, str) else inputs], True
    if not isinstance(inputs, list):
        raise InputError('"inputs" must be a base64 image string or a list of them')
    if not inputs:
        raise InputError('"inputs" is empty')
    items: list[str | bytes] = []
    for index, item in enumerate(inputs):
        if isinstance(item, (bytes, bytearray)):
            items.append(bytes(item))
        elif isinstance(item, str):
            items.append(item)
        else:
            raise InputError(f"inputs[{index}] must be a base64-encoded image file (a string), "
                             f"got {type(item).__name__}")
    # bytes never come from JSON: a list of one bytes item is a raw image body, answered as one image
    single = len(items) == 1 and isinstance(items[0], bytes)
    return items, single


def image_bytes(item: str | bytes, index: int) -> bytes:
    if isinstance(item, bytes):
        data = item
    else:
        text = item.strip()
        if text.startswith(("http://", "https://")):
            raise InputError(f"inputs[{index}] is a URL: the handler does not fetch URLs, send the image file "
                             "base64-encoded")
        if text.startswith("data:"):
            header, comma, text = text.partition(",")
            if not comma or not header.startswith("data:image/") or not header.endswith(";base64"):
                raise InputError(f"inputs[{index}] is a data URL but not data:image/...;base64,...")
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"inputs[{index}] is not valid base64 (send the image file base64-encoded)") from None
    if not data:
        raise InputError(f"inputs[{index}] is empty")
    return data


def _unsupported_format(data: bytes) -> str | None:
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12], "ISO media (HEIF/AVIF/MP4)")
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "SVG"
    return None


def open_image(data: bytes, index: int, limits: PixelLimits) -> Image.Image:
    """The image's header read (no pixels decoded yet) and its size checked against `max_pixels`."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise LimitError(f"inputs[{index}] is too large: its header declares over {2 * (Image.MAX_IMAGE_PIXELS or 0)} "
                         f"pixels > {limits.max_pixels} per image (max_pixels, {PIXEL_ENV['max_pixels']}; "
                         "Pillow's own decompression-bomb guard refused it)") from None
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001  # every way a hostile header fails is the caller's 400
        unsupported = _unsupported_format(data)
        if unsupported:
            raise InputError(f"inputs[{index}] is a {unsupported} image, which this handler does not decode "
                             f"(send {', '.join(FORMATS)})") from None
        raise InputError(f"inputs[{index}] is not an image this handler can read "
                         f"({', '.join(FORMATS)} are accepted)") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"inputs[{index}] has an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise LimitError(f"inputs[{index}] is too large: {width}x{height} = {width * height} pixels > "
                         f"{limits.max_pixels} per image (max_pixels, {PIXEL_ENV['max_pixels']})")
    return image


def load_rgb(image: Image.Image, index: int) -> Image.Image:
    """Decode like transformers' load_image: EXIF orientation applied, then RGB."""
    try:
        image = ImageOps.exif_transpose(image) or image
        return image.convert("RGB")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  # truncated or corrupt data: the caller's 400
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputError(f"inputs[{index}] could not be decoded ({reason}): the file is damaged or truncated") from None


def pixel_values(model: LoadedModel, items: list[str | bytes]) -> list[np.ndarray]:
    """Every image's pixel_values; all headers are checked before the first pixel is decoded."""
    preprocess, limits = _state(model)
    images = [open_image(image_bytes(item, i), i, limits) for i, item in enumerate(items)]
    total = sum(image.size[0] * image.size[1] for image in images)
    if total > limits.max_request_pixels:
        raise LimitError(f"request too large: {len(images)} images hold {total} pixels > "
                         f"{limits.max_request_pixels} per request (max_request_pixels, "
                         f"{PIXEL_ENV['max_request_pixels']}): send fewer or smaller images")
    return [preprocess(load_rgb(image, i)) for i, image in enumerate(images)]


def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    items, single = image_items(inputs)
    if limits is not None:
        limits.check_batch(len(items), "images")
    arrays = pixel_values(model, items)
    if len({a.shape for a in arrays}) > 1:
        raise InputError("these images preprocess to different sizes for this model (it resizes without "
                         "cropping): send one image per request")
    name = next(iter(model.input_types), "pixel_values")
    batch: np.ndarray = np.stack(arrays).astype(model.input_types.get(name, np.float32), copy=False)
    return Encoded(feeds={name: batch}, count=len(arrays), single=single)


def default_function(spec: Mapping[str, Any], labels: int) -> str:
    """What transformers' image-classification pipeline applies when the caller does not say."""
    problem = spec.get("problem_type")
    if problem == "multi_label_classification" or labels == 1:
        return "sigmoid"
    if problem == "single_label_classification" or labels > 1:
        return "softmax"
    return "none"


def scores(logits: np.ndarray, function: str) -> np.ndarray:
    """The pipeline's numerics: float32 logits, numpy softmax/sigmoid."""
    logits = np.asarray(logits, dtype=np.float32)
    if function == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))
    if function == "softmax":
        shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))
    return logits


def logits_of(model: LoadedModel, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    name = model.spec.get("output") or ("logits" if "logits" in outputs else next(iter(outputs)))
    return np.asarray(outputs[name], dtype=np.float32).reshape(len(outputs[name]), -1)


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    logits = logits_of(model, outputs)
    count = logits.shape[-1]
    labels = model.spec.get("labels") or [f"LABEL_{i}" for i in range(count)]
    probs = scores(logits, parameters["function_to_apply"] or default_function(model.spec, count))
    top_k = min(int(parameters["top_k"]), count)
    answers = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:top_k]
        answers.append([{"label": str(labels[i]), "score": float(row[i])} for i in order])
    return answers[0] if encoded.single else answers
