"""Image classification end to end, judged against transformers itself.

Preprocessing: the shipped handler's pixel_values vs the model's transformers image processor (the slow,
PIL one transformers uses without torchvision) fed by transformers' own `load_image`, on awkward files:
odd sizes, grayscale, RGBA, palette PNG/GIF, BMP, WebP, an EXIF-rotated JPEG, a 16-bit PNG.
End to end: random-initialised ViT and ConvNeXt folders built from their configs (no hub), optimized
(fp32, int8-dynamic, int8-static), packaged for Lambda and invoked like Lambda, answers compared with
`transformers.pipeline("image-classification")` on the original PyTorch model.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from slimserve.tasks import get_task
from tests.conftest import assert_clean_error, require, run_cli
from tests.helpers_lambda import run_like_lambda

DATA = Path(__file__).resolve().parent.parent / "optimizer" / "data" / "images"
LABELS = ["tabby cat", "golden retriever", "airliner", "banana", "volcano", "teapot", "zebra", "umbrella"]


# -- images ----------------------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    rng.integers(0, 256, (height, width))], axis=-1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: transformers' load_image applies it
    return _encode(_photo(97, 61, 1), "JPEG", quality=90, exif=exif)


def awkward_images() -> dict[str, bytes]:
    images = {p.name: p.read_bytes() for p in sorted((DATA / "eval").iterdir())[:12]}
    images.update({
        "exif-rotated.jpg": _exif_rotated_jpeg(),
        "gray-odd.png": _encode(_photo(53, 29, 2).convert("L"), "PNG"),
        "rgba.png": _encode(_photo(40, 71, 3).convert("RGBA"), "PNG"),
        "palette.png": _encode(_photo(65, 65, 4).quantize(17), "PNG"),
        "palette-transparent.gif": _encode(_photo(31, 45, 5).quantize(9), "GIF", transparency=0),
        "lossy.webp": _encode(_photo(129, 77, 6), "WEBP", quality=70),
        "tiny.bmp": _encode(_photo(7, 5, 7), "BMP"),
        "sixteen-bit.png": _encode(Image.fromarray(np.arange(48 * 36, dtype=np.uint16).reshape(36, 48) * 37), "PNG"),
        "cmyk.jpg": _encode(_photo(50, 40, 8).convert("CMYK"), "JPEG"),
    })
    return images


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header declaring width × height, with almost no pixel data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + chunk(b"IEND", b""))


# -- preprocessing vs the transformers image processors ------------------------------------------------
def _processors() -> dict[str, Any]:
    from transformers import (
        BitImageProcessor,
        CLIPImageProcessor,
        ConvNextImageProcessor,
        DeiTImageProcessor,
        MobileViTImageProcessor,
        ViTImageProcessor,
    )

    return {
        "vit": ViTImageProcessor(size={"height": 48, "width": 40}),
        "vit-int-size-nearest": ViTImageProcessor(size=37, resample=0, image_mean=0.45, image_std=0.2),
        "convnext-crop-pct": ConvNextImageProcessor(size={"shortest_edge": 56}, crop_pct=0.875),
        "convnext-warp-384": ConvNextImageProcessor(size={"shortest_edge": 384}),
        "resnet-convnext-defaults": ConvNextImageProcessor(),
        "deit-resize-crop": DeiTImageProcessor(size={"height": 72, "width": 72}, crop_size={"height": 64, "width": 64}),
        "deit-crop-larger-than-image": DeiTImageProcessor(size={"height": 30, "width": 40},
                                                          crop_size={"height": 36, "width": 33}),
        "mobilevit-flip": MobileViTImageProcessor(size={"shortest_edge": 70}, crop_size={"height": 64, "width": 64}),
        "bit-shortest-edge": BitImageProcessor(size={"shortest_edge": 66}, crop_size={"height": 60, "width": 60}),
        "clip-lanczos-no-normalize": CLIPImageProcessor(size={"shortest_edge": 50}, crop_size=44, resample=1,
                                                        do_normalize=False),
    }


@pytest.mark.parametrize("name", list(_processors()))
def test_pixel_values_match_the_transformers_image_processor(tmp_path: Path, name: str) -> None:
    from transformers.image_utils import load_image

    from slimserve.optimizer.families.image import preprocessing_steps
    from slimserve.runtime import task_image

    processor = _processors()[name]
    processor.save_pretrained(tmp_path)  # read back from preprocessor_config.json, as a model folder is
    _, steps = preprocessing_steps(tmp_path)
    preprocess = task_image.Preprocessor({"steps": steps})
    limits = task_image.PixelLimits.from_spec({}, environ={})
    for file_name, data in awkward_images().items():
        expected = processor(images=load_image(b64(data)), return_tensors="np")["pixel_values"][0]
        ours = preprocess(task_image.load_rgb(task_image.open_image(data, 0, limits), 0))
        assert ours.dtype == np.float32 and ours.shape == expected.shape, (file_name, ours.shape, expected.shape)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6, err_msg=f"{name}: {file_name}")


def test_data_url_prefix_and_mime_line_breaks_decode_like_load_image() -> None:
    from slimserve.runtime import task_image

    data = _exif_rotated_jpeg()
    wrapped = "\n".join(b64(data)[i:i + 76] for i in range(0, len(b64(data)), 76))  # MIME-style lines
    for item in (f"data:image/jpeg;base64,{b64(data)}", wrapped):
        assert task_image.image_bytes(item, 0) == data


# -- refusals before export -----------------------------------------------------------------------
def _vit_folder(folder: Path, *, processor: Any = None, decisive: bool = True) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                       label2id={label: i for i, label in enumerate(LABELS)})
    model = ViTForImageClassification(config)
    if decisive:
        _decisive(model.classifier)
    model.save_pretrained(folder, safe_serialization=True)
    if processor is not False:
        (processor or ViTImageProcessor(size={"height": 32, "width": 32})).save_pretrained(folder)
    return folder


def _decisive(head: Any) -> None:
    """A random head has near-equal logits, so its top label flips on noise no trained model would notice;
    scaling it up gives trained-like margins (int8's top-1 agreement then measures int8, not ties)."""
    import torch

    with torch.no_grad():
        head.weight.mul_(40.0)


def test_folder_without_preprocessor_config_is_refused_with_a_hint(tmp_path: Path) -> None:
    folder = _vit_folder(tmp_path / "vit", processor=False)
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--recipe", "fp32")
    assert_clean_error(result, code=2, contains="preprocessor_config.json")
    assert "hint:" in result.stderr and not (tmp_path / "out").exists()


def test_an_image_processor_it_cannot_reproduce_is_refused_before_export(tmp_path: Path) -> None:
    from transformers import EfficientNetImageProcessor

    folder = _vit_folder(tmp_path / "vit", processor=EfficientNetImageProcessor())
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--recipe", "fp32")
    assert_clean_error(result, code=2, contains="EfficientNetImageProcessor")
    assert "ViTImageProcessor" in result.stderr  # the hint lists what is supported


# -- end to end ------------------------------------------------------------------------------------
def _convnext_folder(folder: Path) -> Path:
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(1)
    config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=len(LABELS),
                            id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    model = ConvNextForImageClassification(config)
    _decisive(model.classifier)
    model.save_pretrained(folder, safe_serialization=True)
    # written like the hub's facebook/convnext-tiny-224 preprocessor_config.json, at 64 px
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "ConvNextImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 64}}), encoding="utf-8")
    return folder


def _pipeline(folder: Path) -> Any:
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder, use_fast=False)
    return pipeline("image-classification", model=model, image_processor=processor, device="cpu")


def _optimize(folder: Path, out: Path, recipe: str, *extra: str) -> dict[str, Any]:
    result = run_cli("optimize", str(folder), "-o", str(out), "--recipe", recipe, "--format", "json", *extra)
    assert result.returncode == 0, result.stderr
    manifest: dict[str, Any] = json.loads(result.stdout)
    return manifest


def _package(model_dir: Path, out: Path) -> Path:
    result = run_cli("package", str(model_dir), "--target", "lambda", "-o", str(out), "--no-check")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both architectures, optimized and packaged once for every end-to-end test of this module."""
    root = tmp_path_factory.mktemp("images")
    paths = {"vit": _vit_folder(root / "vit"), "convnext": _convnext_folder(root / "convnext")}
    evals = root / "eval-folder"
    evals.mkdir()
    for name, data in list(awkward_images().items())[:10]:
        (evals / name).write_bytes(data)
    paths["eval-folder"] = evals
    for arch, recipe, extra in (("vit", "fp32", ()), ("vit", "int8-dynamic", ()), ("convnext", "fp32", ()),
                                ("convnext", "int8-static", ("--eval", str(evals)))):
        out = root / f"{arch}-{recipe}"
        (root / f"{arch}-{recipe}.json").write_text(json.dumps(_optimize(paths[arch], out, recipe, *extra)))
        paths[f"{arch}-{recipe}"] = out
    for key in ("vit-fp32", "convnext-fp32", "vit-int8-dynamic"):
        paths[f"{key}-pkg"] = _package(paths[key], root / f"{key}-pkg")
    return paths


def _manifest(built: dict[str, Path], key: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((built[key].parent / f"{key}.json").read_text())
    return data


@pytest.mark.slow
@pytest.mark.parametrize("key", ["vit-fp32", "vit-int8-dynamic", "convnext-fp32", "convnext-int8-static"])
def test_fidelity_is_top1_agreement_meeting_the_documented_bar(built: dict[str, Path], key: str) -> None:
    manifest = _manifest(built, key)
    fidelity, runtime = manifest["fidelity"], manifest["runtime"]
    assert runtime["kind"] == "image" and runtime["task"] == "image-classification" and runtime["labels"] == LABELS
    assert fidelity["metric"] == "top1_agreement" and fidelity["reference"] == "pytorch"
    assert {"top5_overlap", "logit_cosine_mean", "logit_cosine_min"} <= set(fidelity["details"])
    assert fidelity["mean"] >= get_task("image-classification").default_min_fidelity, fidelity
    if key.endswith("fp32"):
        assert fidelity["mean"] == 1.0 and fidelity["details"]["logit_cosine_min"] > 0.99999
    if key == "convnext-int8-static":  # --eval FOLDER: calibrated and evaluated on it
        assert fidelity["samples"] == 10 and str(built["eval-folder"]) in fidelity["eval_source"]
    else:
        assert fidelity["samples"] == 24 and "built-in" in fidelity["eval_source"]


def _apigw_event(body: bytes, content_type: str) -> dict[str, Any]:
    return {"httpMethod": "POST", "path": "/predict", "headers": {"Content-Type": content_type},
            "body": b64(body), "isBase64Encoded": True, "requestContext": {"stage": "prod"}}


@pytest.mark.slow
@pytest.mark.parametrize("arch,recipe", [("vit", "fp32"), ("convnext", "fp32"), ("vit", "int8-dynamic")])
def test_lambda_answers_like_the_transformers_pipeline(built: dict[str, Path], tmp_path: Path, arch: str,
                                                       recipe: str) -> None:
    require(__import__("shutil").which("python3.12"), "python3.12")
    images = list(awkward_images().values())[:8]
    jpeg = _encode(_photo(224, 224, 9), "JPEG", quality=90)
    events = [{"inputs": [b64(d) for d in images]},
              {"inputs": f"data:image/jpeg;base64,{b64(jpeg)}", "parameters": {"top_k": 3}},
              _apigw_event(jpeg, "image/jpeg"),
              {"httpMethod": "POST", "path": "/", "headers": {"content-type": "application/json"},
               "body": json.dumps({"inputs": [b64(jpeg)], "parameters": {"top_k": 100}}), "isBase64Encoded": False}]
    result = run_like_lambda(built[f"{arch}-{recipe}-pkg"], tmp_path, "3.12", events)
    assert result["modules"] == []  # no torch, no slimserve, no onnx in the function
    batch, top3, raw, http_all = result["responses"]
    assert raw["statusCode"] == 200 and http_all["statusCode"] == 200, (raw, http_all)

    pipe = _pipeline(built[arch])
    expected = pipe([b64(d) for d in images])
    expected_one = pipe(b64(jpeg))
    expected_top3 = pipe(b64(jpeg), top_k=3)
    cases = [(batch, expected), (top3, expected_top3), (json.loads(raw["body"]), expected_one),
             (json.loads(http_all["body"]), [pipe(b64(jpeg), top_k=100)])]
    for ours, theirs in cases:
        assert isinstance(ours, list) and len(ours) == len(theirs)
        flat_ours = ours if isinstance(ours[0], list) else [ours]
        flat_theirs = theirs if isinstance(theirs[0], list) else [theirs]
        for got, want in zip(flat_ours, flat_theirs):
            assert len(got) == len(want) and set(got[0]) == {"label", "score"}
            if recipe == "fp32":
                assert [g["label"] for g in got] == [w["label"] for w in want], (got, want)
                np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-4)
            else:  # int8: the top label agrees on these images, scores move a little
                assert got[0]["label"] == want[0]["label"], (got, want)
                np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=0.1)
    assert len(json.loads(http_all["body"])[0]) == len(LABELS)  # top_k is capped at the number of labels


@pytest.mark.slow
def test_hostile_images_are_400s_and_413s_like_lambda_answers_them(built: dict[str, Path], tmp_path: Path) -> None:
    require(__import__("shutil").which("python3.12"), "python3.12")
    jpeg = _encode(_photo(120, 90, 10), "JPEG", quality=90)
    tiff = _encode(_photo(10, 10, 11), "TIFF")
    cases: list[tuple[Any, int, str]] = [
        (_apigw_event(bomb_png(), "image/png"), 413, "too large"),
        (_apigw_event(bomb_png(9000, 9000), "image/png"), 413, "max_pixels"),  # under Pillow's own guard
        (_apigw_event(jpeg[: len(jpeg) // 2], "image/jpeg"), 400, "truncated"),
        (_apigw_event(b"hello, I am not an image", "image/jpeg"), 400, "not an image"),
        (_apigw_event(tiff, "image/tiff"), 400, "TIFF"),
        ({"body": json.dumps({"inputs": ["not base64 !!"]})}, 400, "base64"),
        ({"body": json.dumps({"inputs": ["https://example.com/cat.jpg"]})}, 400, "URL"),
        ({"body": json.dumps({"inputs": []})}, 400, "empty"),
        ({"body": json.dumps({"inputs": [b64(jpeg)] * 17})}, 413, "max_batch"),
        ({"body": json.dumps({"inputs": [b64(jpeg)], "parameters": {"threshold": 0.5}})}, 400, "unknown parameter"),
        ({"body": json.dumps({"inputs": [b64(jpeg)], "parameters": {"top_k": 0}})}, 400, "top_k"),
        ({"body": json.dumps({"inputs": [{"image": b64(jpeg)}]})}, 400, "base64"),
    ]
    result = run_like_lambda(built["vit-fp32-pkg"], tmp_path, "3.12", [event for event, _, _ in cases])
    for (event, status, words), answer in zip(cases, result["responses"]):
        assert answer["statusCode"] == status, (words, answer)
        assert words.lower() in json.loads(answer["body"])["error"].lower(), (words, answer)


@pytest.mark.slow
def test_layer_carries_trimmed_pillow_and_deploy_notes_name_the_limits(built: dict[str, Path]) -> None:
    import zipfile

    package = built["vit-fp32-pkg"]
    with zipfile.ZipFile(package / "layer.zip") as zf:
        names = zf.namelist()
    assert any(n.startswith("python/PIL/_imaging.") for n in names) and any("python/PIL/_webp." in n for n in names)
    assert not any(n.startswith("python/tokenizers/") for n in names)
    assert not any("libavif" in n or "libfreetype" in n or "_avif." in n for n in names)
    notes = (package / "DEPLOY.md").read_text()
    assert "SLIMSERVE_MAX_PIXELS" in notes and "6 MB" in notes
    assert "Pillow" in (package / "template.yaml").read_text()


def test_eval_folder_with_a_non_image_is_a_clean_error(tmp_path: Path) -> None:
    folder = _vit_folder(tmp_path / "vit")
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "cat.jpg").write_bytes(_encode(_photo(40, 40, 12), "JPEG"))
    (evals / "notes.txt").write_text("not an image")
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--recipe", "fp32", "--eval", str(evals))
    assert_clean_error(result, code=2, contains="notes.txt")
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--recipe", "fp32",
                     "--eval", str(evals / "cat.jpg"))
    assert_clean_error(result, code=2, contains="folder")


# -- a PyTorch factory with preprocessing declared on the command line --------------------------------
TINY_CNN = '''
import torch
from torch import nn


def make() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5))
    with torch.no_grad():
        model[-1].weight.mul_(20)  # trained-like margins (see _decisive)
    return model
'''
FACTORY_MEAN, FACTORY_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _torchvision_like(data: bytes, resize: int, crop: int) -> Any:
    """transforms.Compose([Resize(resize), CenterCrop(crop), ToTensor(), Normalize(mean, std)]) written out
    from torchvision's source (not installed here): PIL bilinear resize of the shortest edge, crop offsets
    int(round((size - crop) / 2)), float32 / 255, then (x - mean) / std."""
    import torch
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    image = image.resize((new_short, new_long) if w <= h else (new_long, new_short), Image.Resampling.BILINEAR)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    height, width = tensor.shape[1:]
    top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)
    tensor = tensor[:, top:top + crop, left:left + crop]
    mean = torch.tensor(FACTORY_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(FACTORY_STD, dtype=torch.float32)[:, None, None]
    return ((tensor - mean) / std)[None]


@pytest.mark.slow
def test_factory_with_declared_preprocessing_is_served_as_an_image_classifier(tmp_path: Path) -> None:
    import sys

    import torch

    require(__import__("shutil").which("python3.12"), "python3.12")
    (tmp_path / "tinycnn.py").write_text(TINY_CNN)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\nfish\nfrog\n")
    # --resize 39 then a 32 crop: offsets where torchvision's round() differs from transformers' floor
    result = run_cli("optimize", "tinycnn:make", "-o", "out", "--recipe", "fp32", "--image-size", "32",
                     "--resize", "39", "--mean", ",".join(map(str, FACTORY_MEAN)),
                     "--std", ",".join(map(str, FACTORY_STD)), "--labels", "labels.txt", "--format", "json",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["runtime"]["kind"] == "image" and manifest["runtime"]["labels"] == ["cat", "dog", "bird", "fish", "frog"]
    assert manifest["fidelity"]["metric"] == "top1_agreement" and manifest["fidelity"]["mean"] == 1.0
    package = _package(tmp_path / "out", tmp_path / "pkg")

    images = list(awkward_images().values())[:10]
    answers = run_like_lambda(package, tmp_path / "run", "3.12",
                              [{"inputs": [b64(d) for d in images], "parameters": {"top_k": 5}}])["responses"][0]
    sys.path.insert(0, str(tmp_path))
    try:
        model = __import__("tinycnn").make().eval()
    finally:
        sys.path.remove(str(tmp_path))
    labels = ["cat", "dog", "bird", "fish", "frog"]
    for data, answer in zip(images, answers):
        with torch.no_grad():
            probs = torch.softmax(model(_torchvision_like(data, 39, 32)), dim=-1)[0].numpy()
        order = np.argsort(-probs, kind="stable")
        assert [a["label"] for a in answer] == [labels[i] for i in order], (answer, probs)
        np.testing.assert_allclose([a["score"] for a in answer], probs[order], atol=1e-5)


def test_image_options_are_refused_where_they_do_not_apply(tmp_path: Path) -> None:
    folder = _vit_folder(tmp_path / "vit")
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--image-size", "32")
    assert_clean_error(result, code=2, contains="PyTorch factory")
    result = run_cli("optimize", "tinycnn:make", "-o", str(tmp_path / "out"), "--resize", "40")
    assert_clean_error(result, code=2, contains="--image-size")
    result = run_cli("optimize", "tinycnn:make", "-o", str(tmp_path / "out"), "--image-size", "32", "--resize", "16")
    assert_clean_error(result, code=2, contains="smaller")


@pytest.mark.slow
def test_container_http_front_takes_a_raw_jpeg_body(built: dict[str, Path], tmp_path: Path) -> None:
    """The container's WSGI app (http_app) over the same function files and image closure, in a fresh
    python3.12 that sees nothing else: a raw image/jpeg POST answers like the pipeline on one image."""
    import shutil
    import subprocess
    import zipfile

    from slimserve.packagers.interpreters import find_python
    from slimserve.runtime import RUNTIME_DIR

    python = find_python("3.12")
    require(python, "python3.12")
    task, opt = tmp_path / "task", tmp_path / "opt"
    with zipfile.ZipFile(built["convnext-fp32-pkg"] / "function.zip") as zf:
        zf.extractall(task)
    with zipfile.ZipFile(built["convnext-fp32-pkg"] / "layer.zip") as zf:
        zf.extractall(opt)
    shutil.copy(RUNTIME_DIR / "http_app.py", task / "http_app.py")
    jpeg = _encode(_photo(150, 110, 13), "JPEG", quality=90)
    (tmp_path / "body.jpg").write_bytes(jpeg)
    script = (
        "import io, json, sys\n"
        f"sys.path[:0] = [{str(task)!r}, {str(opt / 'python')!r}]\n"
        "import http_app\n"
        f"body = open({str(tmp_path / 'body.jpg')!r}, 'rb').read()\n"
        "out = []\n"
        "for ctype, data in (('image/jpeg', body), ('image/png', b'not a png')):\n"
        "    env = {'REQUEST_METHOD': 'POST', 'PATH_INFO': '/predict', 'CONTENT_TYPE': ctype,\n"
        "           'CONTENT_LENGTH': str(len(data)), 'wsgi.input': io.BytesIO(data)}\n"
        "    status = []\n"
        "    answer = json.loads(b''.join(http_app.app(env, lambda s, h: status.append(s))))\n"
        "    out.append([status[0], answer])\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([str(python), "-I", "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                                                        "SLIMSERVE_MODEL_DIR": str(task / "model")})
    assert run.returncode == 0, run.stderr[-2000:]
    (ok_status, answer), (bad_status, bad) = json.loads(run.stdout.strip().splitlines()[-1])
    assert ok_status.startswith("200") and bad_status.startswith("400"), (ok_status, bad_status, bad)
    expected = _pipeline(built["convnext"])(b64(jpeg))
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    np.testing.assert_allclose([a["score"] for a in answer], [e["score"] for e in expected], atol=1e-4)
