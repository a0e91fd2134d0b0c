"""Generate slimserve's built-in evaluation and calibration images (optimizer/data/images/{eval,calib}).

Run: `.venv/bin/python benchmarks/make_eval_images.py` (deterministic: same bytes for the same Pillow).
The images are synthetic (gradients, shapes, stripes, noise, blurred "scenes"), so they carry no licence
beyond the repository's. They are varied on purpose, because the handler's decoding is part of what is
evaluated: odd sizes, portrait and landscape, grayscale, RGBA, palette PNG, GIF, BMP, WebP, and a JPEG
whose EXIF orientation rotates it. Small (a few kB each) to keep the repository light.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "optimizer" / "data" / "images"


def _gradient(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = ((x / max(w - 1, 1)) * rng.uniform(0.2, 1) + (y / max(h - 1, 1)) * rng.uniform(0.2, 1)) / 2
    arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def _shapes(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    image = _gradient(rng, w, h)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(5, w // 2 + 6)), y0 + int(rng.integers(5, h // 2 + 6))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return image


def _stripes(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * freq)
    colors = rng.uniform(0, 255, (2, 3))
    arr = np.where(wave[..., None] > 0, colors[0], colors[1])
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _noise(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2.5))))


def _scene(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A sky, a horizon, a sun and some blobs: low-frequency content like a photo's."""
    image = _gradient(rng, w, h)
    draw = ImageDraw.Draw(image)
    horizon = int(h * rng.uniform(0.4, 0.8))
    draw.rectangle((0, horizon, w, h), fill=tuple(int(v) for v in rng.integers(0, 160, 3)))
    r = int(min(w, h) * rng.uniform(0.08, 0.2))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, max(r + 1, horizon - r)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 220, 90))
    return image.filter(ImageFilter.GaussianBlur(1.2))


GENERATORS: tuple[Callable[[np.random.Generator, int, int], Image.Image], ...] = (_shapes, _stripes, _noise, _scene,
                                                                                  _gradient)
# (size, mode, format) cycled through: what phones, browsers and scanners send
VARIANTS = (((224, 224), "RGB", "JPEG"), ((171, 97), "RGB", "PNG"), ((120, 200), "L", "JPEG"),
            ((150, 150), "RGBA", "PNG"), ((203, 131), "P", "PNG"), ((96, 160), "RGB", "WEBP"),
            ((140, 101), "P", "GIF"), ((64, 48), "RGB", "BMP"), ((257, 181), "RGB", "JPEG-EXIF"),
            ((33, 300), "RGB", "PNG"), ((300, 41), "L", "PNG"), ((199, 199), "RGB", "WEBP"))


def encode(image: Image.Image, mode: str, fmt: str, rng: np.random.Generator) -> tuple[bytes, str]:
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (image.height, image.width), dtype=np.uint8), "L")
        image = image.convert("RGBA")
        image.putalpha(alpha.filter(ImageFilter.GaussianBlur(3)))
    elif mode == "P":
        image = image.quantize(colors=int(rng.integers(8, 64)))
    elif mode == "L":
        image = image.convert("L")
    buf = io.BytesIO()
    if fmt == "JPEG-EXIF":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
        image.save(buf, "JPEG", quality=85, exif=exif)
        return buf.getvalue(), "jpg"
    options: dict[str, object] = {"JPEG": {"quality": 85}, "WEBP": {"quality": 80}, "PNG": {"optimize": True}}.get(fmt, {})
    image.save(buf, fmt, **options)
    return buf.getvalue(), {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}[fmt]


def generate(folder: Path, count: int, seed: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    rng = np.random.default_rng(seed)
    total = 0
    for index in range(count):
        (w, h), mode, fmt = VARIANTS[index % len(VARIANTS)]
        image = GENERATORS[index % len(GENERATORS)](rng, w, h)
        data, suffix = encode(image, mode, fmt, rng)
        (folder / f"{index:02d}-{GENERATORS[index % len(GENERATORS)].__name__.strip('_')}.{suffix}").write_bytes(data)
        total += len(data)
    return total


def main() -> int:
    total = generate(OUT / "eval", 24, seed=11) + generate(OUT / "calib", 8, seed=12)
    print(f"wrote {OUT}: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
