"""numpy without BLAS for a runtime closure (`--numpy no-blas`), built here for the target's glibc.

Why: onnxruntime does every matrix product; the shipped runtime uses numpy for arrays, one norm and one
small outer product. PyPI's numpy wheel carries OpenBLAS and the Fortran runtime it needs (28 MB unzipped),
which the runtime never calls: without them MiniLM's text layer is 21.1 MB zipped instead of 29.2
(benchmarks/results/lambda_layer.md). numpy's own build option
`-Dblas=none -Dlapack=none` falls back to its internal loops (and its bundled lapack_lite for linalg).

How: pip builds the pinned sdist with the *target's* interpreter, with zig's C/C++ compilers aimed at the
target's glibc (`-target x86_64-linux-gnu.2.34`). The machine's own compiler would link against its newer
glibc (on Debian 12, `hypot@GLIBC_2.35`), and the module would fail to import on Lambda's python3.12 (glibc
2.34); zig also links its C++ runtime statically, so no libstdc++ from this machine is needed. numpy's build
tools are pinned (runtime/numpy-build.txt). Every ELF file of the result is then checked (`check_native`):
it may need only glibc's libraries, at versions the target has, for the target's machine. The closure's
smoke test then runs the shipped runtime on it with the target interpreter.

Cost: about 4 minutes of two CPUs, once per numpy version, target and toolchain (cached as a wheel beside
the downloaded ones); zig comes from PyPI (`pip install 'slimserve[numpy-build]'`). Only for this machine's
architecture: building for another needs that machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import IO

from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.target import Target, host_arch
from slimserve.packagers.wheels import Pin, read_pins
from slimserve.progress import NULL_PROGRESS, Progress

BUILD_PINS = Path(__file__).resolve().parent / "runtime" / "numpy-build.txt"
# numpy's meson options: no BLAS/LAPACK library (its internal fallbacks), and say so rather than fail.
MESON_OPTIONS = ("-Dblas=none", "-Dlapack=none", "-Dallow-noblas=true")
# The libraries a module may need: glibc's own (every Linux the targets name has them at these sonames).
GLIBC_LIBRARIES = frozenset({"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
                             "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"})
MIN_NUMPY_MAJOR = 2  # numpy 1.26 (python3.10/3.11) builds with Cython < 3.1 and other options: not tried
BUILD_FORMAT = 1  # bump when the build recipe changes, so cached wheels are rebuilt
_ZIG_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
_ELF_MACHINE = {"x86_64": "EM_X86_64", "arm64": "EM_AARCH64"}  # pyelftools' names for e_machine


def _zig_version() -> str:
    try:
        return metadata.version("ziglang")
    except metadata.PackageNotFoundError:
        raise SlimserveError("--numpy no-blas builds numpy with zig's compilers, which are not installed",
                             hint="pip install 'slimserve[numpy-build]' (or use --numpy pypi)") from None


def _build_key(pin: Pin, target: Target, zig: str) -> str:
    fields = {"format": BUILD_FORMAT, "pin": str(pin), "python": target.python, "arch": target.arch,
              "glibc": target.glibc, "zig": zig, "meson": MESON_OPTIONS,
              "build_pins": hashlib.sha256(BUILD_PINS.read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def require_buildable(target: Target) -> tuple[Path, str]:
    """The target interpreter and zig's version, or the one-line reason this machine cannot build for
    `target` (checked where the options are parsed, before anything slow runs)."""
    if target.arch != host_arch():
        raise SlimserveError(f"--numpy no-blas builds numpy on this machine, which cannot build for {target.arch}",
                             hint=f"build on an {target.arch} machine, or use --numpy pypi")
    numpy = next((p for p in read_pins(target, "") if p.name == "numpy"), None)
    if numpy is None or int(numpy.version.split(".")[0]) < MIN_NUMPY_MAJOR:
        raise SlimserveError(f"--numpy no-blas builds numpy 2 with its pinned build tools; python{target.python} "
                             f"ships {numpy or 'no numpy'} (Amazon Linux 2's glibc 2.26 needs it)",
                             hint="use --python 3.12 or later, or --numpy pypi")
    python = find_python(target.python)
    if python is None:
        raise SlimserveError(f"--numpy no-blas builds numpy with python{target.python}, which is not on this "
                             "machine", hint=f"install it (pyenv install {target.python}), or use --numpy pypi")
    return python, _zig_version()


def noblas_wheel(pin: Pin, target: Target, cache: Path, progress: Progress = NULL_PROGRESS) -> Path:
    """The numpy wheel without BLAS for `target` (built once, then taken from `cache`)."""
    python, zig = require_buildable(target)
    folder = cache / target.wheel_key / f"numpy-no-blas-{_build_key(pin, target, zig)}"
    done = sorted(folder.glob("numpy-*.whl"))
    if done:
        return done[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".numpy-build-", dir=folder.parent))
    try:
        with progress.stage(f"build {pin} without BLAS for python{target.python} (once: about 4 minutes)"):
            wheel = _build(pin, target, python, staging)
            check_native(wheel, target)
        built = staging / "done"
        built.mkdir()
        shutil.move(str(wheel), built / wheel.name)
        try:
            os.replace(built, folder)
        except OSError:  # another process finished the same build first: use theirs
            if not any(folder.glob("numpy-*.whl")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return min(folder.glob("numpy-*.whl"))


def _compiler(staging: Path, name: str, driver: str, target: Target) -> Path:
    """A one-line script meson can use as CC/CXX: zig's clang aimed at the target's architecture and glibc."""
    major, minor = target.glibc
    script = staging / name
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ziglang {driver} '
                      f'-target {_ZIG_ARCH[target.arch]}-linux-gnu.{major}.{minor} "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return script


def _build(pin: Pin, target: Target, python: Path, staging: Path) -> Path:
    out = staging / "wheel"
    env = {**os.environ, "CC": str(_compiler(staging, "cc", "cc", target)),
           "CXX": str(_compiler(staging, "cxx", "c++", target)), "PIP_CONSTRAINT": str(BUILD_PINS),
           "ZIG_GLOBAL_CACHE_DIR": str(staging / "zig-cache"), "ZIG_LOCAL_CACHE_DIR": str(staging / "zig-cache"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    for flags in ("CFLAGS", "CXXFLAGS", "LDFLAGS", "CPPFLAGS"):  # this machine's flags are not the target's
        env.pop(flags, None)
    # --no-cache-dir: pip would otherwise reuse a numpy wheel it built earlier with other compilers
    cmd = [str(python), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary", "numpy",
           "--only-binary", ":none:", "-w", str(out), str(pin)]
    cmd += [f"-Csetup-args={option}" for option in MESON_OPTIONS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wheels = sorted(out.glob("numpy-*.whl"))
    if proc.returncode != 0 or not wheels:
        log = staging.parent / "numpy-build.log"
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        errors = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()]
        raise ToolError(f"building {pin} without BLAS failed: {(errors or ['no wheel written'])[0][:200]}",
                        hint=f"the whole log is in {log}; or use --numpy pypi")
    return wheels[0]


def check_native(wheel: Path, target: Target) -> None:
    """Every ELF file in `wheel` is for the target's machine and needs only glibc, at versions it has."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            with zf.open(info) as handle:
                if handle.read(4) != b"\x7fELF":
                    continue
            with tempfile.TemporaryFile() as copy, zf.open(info) as handle:
                shutil.copyfileobj(handle, copy)
                copy.seek(0)
                _check_elf(copy, info.filename, target)


def _check_elf(handle: IO[bytes], name: str, target: Target) -> None:
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    elf = ELFFile(handle)
    if elf["e_machine"] != _ELF_MACHINE[target.arch]:
        raise ToolError(f"the numpy built for {target.arch} holds {name} for {elf['e_machine']}")
    needed = {str(tag.needed)  # type: ignore[attr-defined]  # pyelftools sets it on DT_NEEDED tags
              for section in elf.iter_sections() if isinstance(section, DynamicSection)
              for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"}
    foreign = sorted(needed - GLIBC_LIBRARIES)
    if foreign:
        raise ToolError(f"the numpy built without BLAS needs {', '.join(foreign)} ({name}), which the target "
                        "does not have", hint="report this; use --numpy pypi meanwhile")
    too_new = set()
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for _, versions in section.iter_versions():
                for version in versions:
                    label = str(version.name)
                    if label.startswith("GLIBC_") and label[6:].replace(".", "").isdigit():
                        parts = tuple(int(p) for p in label[6:].split("."))
                        if parts[:2] > target.glibc:
                            too_new.add(label)
    if too_new:
        major, minor = target.glibc
        raise ToolError(f"the numpy built without BLAS needs {', '.join(sorted(too_new))} ({name}); "
                        f"python{target.python} runs on glibc {major}.{minor}",
                        hint="report this; use --numpy pypi meanwhile")
