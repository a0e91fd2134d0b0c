"""What inference never touches, as data: the rules that trim an unpacked runtime closure.

Each rule names paths relative to the site-packages root. Directory rules remove whole trees; file rules
match names anywhere. `*.dist-info` is always kept (importlib.metadata reads it; onnxruntime asks for its
own version at import). Every rule here is proven harmless by the closure's import-and-infer smoke test.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

# Whole trees inference never imports.
DROP_DIRS = (
    "onnxruntime/tools",          # model conversion / perf scripts (import onnx, etc.)
    "onnxruntime/transformers",   # transformer graph fusion tooling (imports onnx, torch, sympy)
    "onnxruntime/quantization",   # quantization tooling (imports onnx, sympy); slimserve quantizes at build time
    "onnxruntime/datasets",       # sample models for the docs
    "onnxruntime/backend",        # ONNX backend test API (imports onnx)
    "numpy/f2py",                 # Fortran wrapper generator
    "numpy/distutils",            # build tooling (numpy 1.x)
    "numpy/_pyinstaller",         # PyInstaller hooks
    "numpy/doc",
    "numpy/_core/include",        # C headers
    "numpy/core/include",         # C headers (numpy 1.x)
    "numpy/_core/lib",            # static npymath + pkg-config
    "numpy/core/lib",             # static npymath + pkg-config (numpy 1.x)
    "numpy/random/lib",           # static npyrandom
    "numpy/random/_examples",     # cython/numba examples
    "tokenizers/tools",           # HTML visualizer for notebooks
)
# NumPy >= 2 imports these submodules lazily (numpy/__init__.py `__getattr__`) and inference never asks
# for them; NumPy 1.x imports random/fft/polynomial/ma/ctypeslib at init, so there they stay.
# This layer is an inference runtime, not a general numpy: `np.random` raises ImportError in it.
DROP_DIRS_NUMPY2 = (
    "numpy/random", "numpy/fft", "numpy/polynomial", "numpy/ma", "numpy/testing", "numpy/typing",
    "numpy/ctypeslib",
)
DROP_FILES_NUMPY2 = (
    "numpy/_core/_simd.cpython-*.so",              # SIMD test harness, imported only by numpy's tests
    "numpy/_core/_multiarray_tests.cpython-*.so",  # imported at init by numpy 1.x only
)
# Pillow (image models) keeps what the handler's decoders use: _imaging (JPEG, PNG via zlib, GIF, BMP, and
# libtiff/openjp2/xcb it links) and _webp. Gone: AVIF (5 MB, the handler does not open AVIF; Pillow's AVIF
# plugin tolerates its absence), fonts (FreeType, HarfBuzz, Brotli, libpng used only by FreeType), colour
# management (lcms2), Tk, ImageMath and morphology: ~9 MB unzipped. The smoke test decodes PNG, JPEG and WebP.
PILLOW_UNUSED_LIBS = ("libavif-*.so*", "libfreetype-*.so*", "libharfbuzz-*.so*", "libbrotlicommon-*.so*",
                      "libbrotlidec-*.so*", "libpng16-*.so*", "liblcms2-*.so*")

# Directory names removed wherever they occur.
DROP_DIR_NAMES = ("tests", "__pycache__")
# File name patterns removed wherever they occur (outside *.dist-info).
DROP_FILES = (
    "*.pyi", "*.pxd", "*.pyx", "*.h", "*.hpp", "*.c", "*.cpp", "*.a", "*.pc", "py.typed",
    "conftest.py",
    # numpy's test-only extension modules (not _multiarray_tests: numpy 1.x imports it at init)
    "_umath_tests.cpython-*.so", "_rational_tests.cpython-*.so", "_struct_ufunc_tests.cpython-*.so",
    "_operand_flag_tests.cpython-*.so",
    "libonnxruntime.so.*",            # ORT's C API for native callers; the Python module links ORT statically
    *(f"{name}.cpython-*.so" for name in ("_avif", "_imagingft", "_imagingcms", "_imagingtk", "_imagingmath",
                                          "_imagingmorph")),
    *PILLOW_UNUSED_LIBS,
)


def slim_tree(site: Path) -> int:
    """Delete what inference never touches from an unpacked closure; returns the bytes removed."""
    removed = 0
    numpy2 = any(p.name.split("-")[1].startswith(("2.", "3.")) for p in site.glob("numpy-*.dist-info"))
    for pattern in DROP_FILES_NUMPY2 if numpy2 else ():
        for path in site.glob(pattern):
            removed += path.stat().st_size
            path.unlink()
    for rel in DROP_DIRS + (DROP_DIRS_NUMPY2 if numpy2 else ()):
        path = site / rel
        if path.is_dir():
            removed += _tree_bytes(path)
            shutil.rmtree(path)
    for path in sorted(site.rglob("*"), reverse=True):  # children before parents
        if _in_dist_info(path, site) or not path.exists():
            continue
        if path.is_dir() and path.name in DROP_DIR_NAMES:
            removed += _tree_bytes(path)
            shutil.rmtree(path)
        elif path.is_file() and any(fnmatch.fnmatch(path.name, pat) for pat in DROP_FILES):
            removed += path.stat().st_size
            path.unlink()
    return removed


def _in_dist_info(path: Path, site: Path) -> bool:
    return path.relative_to(site).parts[0].endswith(".dist-info")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# Extension modules whose symbol tables can go. Libraries grafted by auditwheel into `*.libs/` are left
# alone: patchelf rewrote their program headers, and `strip` then breaks them ("ELF load command
# address/offset not page-aligned" for numpy's OpenBLAS). The closure's smoke test proves the rest.
STRIP_GLOBS = ("tokenizers/*.so", "numpy/**/*.so")


def strip_native(site: Path, strip: str | None = None) -> int:
    """`strip --strip-unneeded` the extension modules above; returns bytes saved (0 without binutils)."""
    import subprocess

    tool = strip or shutil.which("strip")
    if tool is None:
        return 0
    saved = 0
    for pattern in STRIP_GLOBS:
        for path in sorted(site.glob(pattern)):
            if any(part.endswith(".libs") for part in path.relative_to(site).parts):
                continue
            before = path.stat().st_size
            proc = subprocess.run([tool, "--strip-unneeded", str(path)], capture_output=True, check=False)
            if proc.returncode == 0:
                saved += before - path.stat().st_size
    return saved
