"""The runtime closure: a site-packages folder of exactly what inference imports, for one target.

`build_closure(target, extra)` downloads the pinned wheels for the target's Python and architecture,
unpacks them, trims what inference never touches (`slim.py`), compiles bytecode with the target's own
interpreter (unchecked-hash .pyc: Lambda's read-only filesystem cannot write a cache), rewrites each
`*.dist-info/RECORD` to list exactly the shipped files, smoke-tests it (import + one inference in a fresh
`-I -S` interpreter that sees only the closure), and caches it under a key made of all of the above.

Bytecode records the path the closure has where it runs (`prefix`: /opt/python in a Lambda layer,
/var/task or /app/packages in an image), never the build folder: a traceback names the deployed file, and
no byte of the artifact depends on where the cache lives. A closure is therefore built per prefix (the
prefix is part of the cache key). The alternative, one closure with a prefix-less relative name compiled
in, would make tracebacks name files that exist nowhere; compiling costs seconds, so correctness wins.

Same input, same bytes: nothing the build host chooses reaches the files (the build folder's name is
random, and TMPDIR, umask and cache location vary). Modes are set from the wheel, never the umask, and
the archives set modes by name anyway (reproducible.py).

Cache root: `$SLIMSERVE_CACHE/closures`, else `$XDG_CACHE_HOME/slimserve/closures`, else
`~/.cache/slimserve/closures`. The cache is rebuildable: deleting it only costs a rebuild.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from slimserve.errors import ToolError, first_line
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.slim import PILLOW_UNUSED_LIBS, slim_tree, strip_native
from slimserve.packagers.target import Target, host_arch
from slimserve.packagers.wheels import PINS_FILE, Pin, download_wheel, read_pins, unpack_wheel
from slimserve.progress import NULL_PROGRESS, Progress

# Bump when the layout or the slimming rules change, so cached closures are rebuilt.
CLOSURE_FORMAT = 7
# Where the closure sits in a Lambda layer (layers extract to /opt; /opt/python is on the runtime's path).
LAYER_PREFIX = "/opt/python"
# Ship sourceless bytecode (legacy `mod.pyc` beside where `mod.py` was). Measured on the 3.12 text layer
# (benchmarks/results/lambda_layer.md): import of numpy+onnxruntime+tokenizers takes ~400 ms from sources
# without usable bytecode, ~190 ms with .pyc, and the same ~190 ms whether or not the .py files are kept
# (the difference is within this machine's noise). Dropping them saves 3.3 MB unzipped / 0.85 MB zipped,
# which the 30 MB layer budget needs. Cost: tracebacks show file and line but not the source text.
KEEP_SOURCES = False
INFO_NAME = "closure.json"
# The requirements extras a runtime closure can carry (packagers/runtime/requirements.txt markers).
EXTRAS = ("", "text", "image")
# Strip symbol tables from extension modules (only when the target's arch is this machine's, so the smoke
# test can prove the result): 0.6 MB zipped off the MiniLM text layer, which sits close to its 30 MB budget.
STRIP_NATIVE = True


def cache_root() -> Path:
    if os.environ.get("SLIMSERVE_CACHE"):
        return Path(os.environ["SLIMSERVE_CACHE"]) / "closures"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "slimserve" / "closures"


def wheel_cache() -> Path:
    return cache_root().parent / "wheels"


def strip_tool(target: Target) -> str | None:
    """The binutils `strip` that will run (its version is part of the closure's identity), or None."""
    if not STRIP_NATIVE or not _native_arch_matches(target) or shutil.which("strip") is None:
        return None
    proc = subprocess.run(["strip", "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout.splitlines() or ["strip"])[0].strip()


def extra_name(text: bool | str) -> str:
    """The requirements `extra` a model's runtime needs: "text" (tokenizers), "image" (Pillow) or "" (tensor
    models). Older callers pass a bool: text or not."""
    if isinstance(text, bool):
        return "text" if text else ""
    if text not in EXTRAS:
        raise ValueError(f"unknown runtime extra {text!r} (one of {', '.join(repr(e) for e in EXTRAS)})")
    return text


def closure_key(target: Target, text: bool | str, pins: tuple[Pin, ...], compiler: str | None,
                prefix: str = LAYER_PREFIX) -> str:
    extra = extra_name(text)
    fields: dict[str, Any] = {"format": CLOSURE_FORMAT, "python": target.python, "arch": target.arch,
                              "text": extra == "text", "pins": [str(p) for p in pins], "bytecode": compiler,
                              "sources": KEEP_SOURCES, "strip": strip_tool(target), "prefix": prefix}
    if extra not in ("text", ""):  # text and tensor keys stay what they were before extras existed
        fields["extra"] = extra
        fields["pillow_trim"] = PILLOW_UNUSED_LIBS  # image closures are rebuilt when Pillow's trimming changes
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return f"{target.key}-{extra or 'tensor'}-{digest}"


def build_closure(target: Target, text: bool | str, cache_dir: Path | None = None,
                  progress: Progress = NULL_PROGRESS, prefix: str = LAYER_PREFIX) -> Path:
    """The site-packages folder for `target` (cached); inference imports need nothing else.

    `text` is the runtime extra the model needs (`extra_name`): "text", "image", "" or a bool (text or not).

    `prefix` is the absolute path the folder will have where it runs (its bytecode records it).
    """
    if not prefix.startswith("/"):
        raise ValueError(f"closure prefix must be absolute, got {prefix!r}")
    extra = extra_name(text)
    pins = read_pins(target, extra)
    python = find_python(target.python)
    compiler = _interpreter_version(python) if python else None
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / closure_key(target, extra, pins, compiler, prefix)
    if (final / INFO_NAME).is_file() and (final / "site").is_dir():
        return final / "site"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        site = staging / "site"
        site.mkdir()
        with progress.stage(f"runtime closure for {target.describe()}", total=len(pins) + 3) as stage:
            wheels = []
            for pin in pins:
                wheels.append(_wheel(pin, target, wheel_cache() if cache_dir is None else root / "wheels", progress))
                stage.advance()
            for wheel in wheels:
                unpack_wheel(wheel, site)
            trimmed = slim_tree(site)
            stripped = strip_native(site) if strip_tool(target) else 0
            stage.advance()
            if python is not None:
                _compile(python, site, prefix)
            stage.advance()
            _rewrite_records(site)
            if python is not None and _native_arch_matches(target):
                _smoke_test(python, site, extra)
            stage.advance()
        info = {"format": CLOSURE_FORMAT, "target": {"python": target.python, "arch": target.arch},
                "text": extra == "text", "extra": extra, "pins": [str(p) for p in pins], "wheels": [w.name for w in wheels],
                "bytecode": compiler or "none: no python" + target.python + " on this machine",
                "numpy": target.numpy, "sources": KEEP_SOURCES, "trimmed_bytes": trimmed, "stripped_bytes": stripped, "strip": strip_tool(target), "pins_file": PINS_FILE.name,
                "prefix": prefix}
        (staging / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(staging, final)
        except OSError:  # another process finished the same closure first: use theirs
            if not (final / INFO_NAME).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final / "site"


def _wheel(pin: Pin, target: Target, cache: Path, progress: Progress) -> Path:
    """The wheel a pin ships as: PyPI's, or for `--numpy no-blas` numpy built here without BLAS."""
    if pin.name == "numpy" and target.numpy == "no-blas":
        from slimserve.packagers.numpy_noblas import noblas_wheel

        return noblas_wheel(pin, target, cache, progress)
    return download_wheel(pin, target, cache)


def closure_info(site: Path) -> dict[str, Any]:
    """What `build_closure` recorded about a closure: pins, wheels, bytecode interpreter."""
    data: dict[str, Any] = json.loads((Path(site).parent / INFO_NAME).read_text(encoding="utf-8"))
    return data


def _interpreter_version(python: Path) -> str:
    out = subprocess.run([str(python), "-I", "-S", "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, check=False)
    return f"CPython {out.stdout.strip() or '?'}"


def _compile(python: Path, site: Path, prefix: str) -> None:
    """Unchecked-hash bytecode for the target version; legacy (sourceless) layout when sources are dropped.

    `-d prefix`: the file name compiled into every code object (`co_filename`, what tracebacks show) is
    the path in the artifact, not the build folder's (which is random, and a host path).
    """
    cmd = [str(python), "-I", "-S", "-m", "compileall", "-q", "-j", "0", "-d", prefix,
           "--invalidation-mode", "unchecked-hash", str(site)]
    if not KEEP_SOURCES:
        cmd.insert(-1, "-b")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(f"compiling the runtime closure with {python} failed: {first_line(proc.stdout + proc.stderr)}")
    if not KEEP_SOURCES:
        for source in site.rglob("*.py"):
            if not _in_dist_info(source, site) and source.with_suffix(".pyc").is_file():
                source.unlink()


def _in_dist_info(path: Path, site: Path) -> bool:
    return path.relative_to(site).parts[0].endswith(".dist-info")


def _record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _rewrite_records(site: Path) -> None:
    """Each RECORD lists exactly the files shipped for its distribution (kept entries + their bytecode)."""
    for record in sorted(site.glob("*.dist-info/RECORD")):
        with open(record, newline="", encoding="utf-8") as fh:
            listed = [row[0] for row in csv.reader(fh) if row]
        shipped: list[str] = []
        for rel in listed:
            path = site / rel
            if rel.endswith(".dist-info/RECORD"):
                continue
            if path.is_file():
                shipped.append(rel)
            if rel.endswith(".py"):  # its bytecode, whether or not the source was kept
                pyc = [path.with_suffix(".pyc")] + sorted(path.parent.glob(f"__pycache__/{path.stem}.*.pyc"))
                shipped.extend(p.relative_to(site).as_posix() for p in pyc if p.is_file())
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for rel in sorted(set(shipped)):
            path = site / rel
            writer.writerow([rel, _record_hash(path), path.stat().st_size])
        writer.writerow([record.relative_to(site).as_posix(), "", ""])
        record.write_text(buf.getvalue(), encoding="utf-8")


def _native_arch_matches(target: Target) -> bool:
    return target.arch == host_arch()


_SMOKE = r"""
import sys
sys.path[:0] = [sys.argv[1]]
import numpy, onnxruntime
sess = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
m = numpy.arange(4096, dtype=numpy.float64).reshape(64, 64) / 4096
assert abs(float((m @ m.T).trace()) - float((m * m).sum())) < 1e-6  # BLAS-backed matmul still loads
x = numpy.arange(4, dtype=numpy.float32).reshape(1, 4)
(y,) = sess.run(None, {"x": x})
assert (y == x + x).all(), y
if sys.argv[3] == "image":
    import io
    from PIL import Image
    from PIL import ImageOps
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):  # every decoder the image handler opens
        buf = io.BytesIO()
        Image.new("RGB", (5, 3), (200, 10, 30)).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        im = Image.open(io.BytesIO(buf.getvalue()), formats=["PNG", "JPEG", "WEBP", "GIF", "BMP"])
        im = ImageOps.exif_transpose(im).convert("RGB").resize((4, 4), Image.Resampling.BICUBIC)
        assert numpy.asarray(im).shape == (4, 4, 3), fmt
    Image.init()  # every plugin imports without the trimmed libraries
if sys.argv[3] == "text":
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str('{"version":"1.0","model":{"type":"WordLevel","vocab":{"[UNK]":0,"hi":1},"unk_token":"[UNK]"},"pre_tokenizer":{"type":"Whitespace"}}')
    assert tok.encode("hi there").ids == [1, 0]
import importlib.metadata as md
assert md.version("onnxruntime") and md.version("numpy")
print("ok")
"""


def _smoke_test(python: Path, site: Path, extra: str) -> None:
    """Import the closure alone (no dev venv) and run one tiny ONNX graph: proves the trimming is safe."""
    with tempfile.TemporaryDirectory(prefix="slimserve-smoke-") as tmp:
        model = Path(tmp) / "add.onnx"
        model.write_bytes(_add_model_bytes())
        proc = subprocess.run([str(python), "-I", "-S", "-c", _SMOKE, str(site), str(model), extra or "tensor"],
                              capture_output=True, text=True, cwd=tmp, check=False, timeout=300)
    if proc.returncode != 0 or "ok" not in proc.stdout:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln]
        raise ToolError(f"the trimmed runtime closure does not work: {lines[-1] if lines else 'no output'}",
                        hint="this is a slimserve bug in packagers/slim.py rules; rerun with --debug and report it")


def _add_model_bytes() -> bytes:
    """y = x + x, IR 8 / opset 13 so every pinned onnxruntime (>= 1.16) loads it."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "smoke",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return bytes(model.SerializeToString())
