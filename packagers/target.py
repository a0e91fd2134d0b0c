"""Where an artifact will run: a Python version and a CPU architecture, and what follows from them.

AWS Lambda's managed Python runtimes fix the C library the wheels must link against: python3.10 and
python3.11 run on Amazon Linux 2 (glibc 2.26), python3.12 and later on Amazon Linux 2023 (glibc 2.34).
A wheel tagged for a newer glibc installs fine and then fails to load at init, so the tags we ask pip
for stop at the runtime's glibc.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from typing import Literal

from slimserve.errors import SlimserveError

Arch = Literal["x86_64", "arm64"]
# Which numpy the runtime closure ships: PyPI's wheel (with OpenBLAS), or one built here without BLAS for the
# target's glibc (packagers/numpy_noblas.py: 8 MB off the zipped layer; onnxruntime does every matrix product).
NumpyBuild = Literal["pypi", "no-blas"]
NUMPY_BUILDS: tuple[NumpyBuild, ...] = ("pypi", "no-blas")

DEFAULT_PYTHON = "3.12"
ARCHES: tuple[Arch, ...] = ("x86_64", "arm64")

# Lambda runtime -> glibc (major, minor) of its base image: docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html
# The closure is built for the oldest glibc a packaged platform offers for that Python (Lambda's; the other
# platforms' images are newer), so every Python a packaged platform's profile lists needs an entry here.
_GLIBC = {"3.10": (2, 26), "3.11": (2, 26), "3.12": (2, 34), "3.13": (2, 34), "3.14": (2, 34)}


def host_arch() -> str:
    """This machine's architecture in the targets' names ("x86_64", "arm64"; another machine's own name)."""
    machine = platform.machine()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64" if machine in ("x86_64", "AMD64") else machine


@functools.cache
def supported_pythons() -> tuple[str, ...]:
    """Pythons slimserve builds for: those the platforms it packages for run (their profiles' [runtime])."""
    from slimserve.profiles.loader import load_profile, packaged_platforms

    versions = {v for name in packaged_platforms() for v in load_profile(name).runtime.python}
    return tuple(sorted(versions, key=lambda v: tuple(int(p) for p in v.split("."))))
_WHEEL_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
# ELF e_machine values of native code for each architecture (EM_X86_64, EM_AARCH64).
ELF_MACHINE = {"x86_64": 62, "arm64": 183}


@dataclass(frozen=True)
class Target:
    """A Lambda-compatible Linux target: CPython `python` ("3.12") on `arch` ("x86_64" | "arm64"), and the
    numpy build its runtime closure ships (`numpy`: "pypi" | "no-blas")."""

    python: str = DEFAULT_PYTHON
    arch: Arch = "x86_64"
    numpy: NumpyBuild = "pypi"

    def __post_init__(self) -> None:
        supported = supported_pythons()
        if self.python not in supported:
            raise SlimserveError(
                f"unsupported target Python {self.python!r}: the platforms slimserve packages for run "
                f"{', '.join(supported)}",
                hint=f"pass --python {DEFAULT_PYTHON} (or another listed version)",
            )
        if self.python not in _GLIBC:
            raise SlimserveError(f"slimserve does not know which glibc Python {self.python} runs on",
                                 hint="add it to packagers/target.py's _GLIBC (from the platform's runtime docs)")
        if self.arch not in ARCHES:
            raise SlimserveError(f"unsupported architecture {self.arch!r}: choose x86_64 or arm64")
        if self.numpy not in NUMPY_BUILDS:
            raise SlimserveError(f"unknown numpy build {self.numpy!r}: choose {' or '.join(NUMPY_BUILDS)}")

    @classmethod
    def parse(cls, python: str, arch: str, numpy: str = "pypi") -> Target:
        """A Target from user-given strings (CLI, config): the same one-line errors, arch and numpy narrowed."""
        build = next((known for known in NUMPY_BUILDS if numpy == known), None)
        for known in ARCHES:
            if arch == known and build is not None:
                target = cls(python=python, arch=known, numpy=build)
                if build == "no-blas":  # built on this machine: say now if it cannot be, not after the export
                    from slimserve.packagers.numpy_noblas import require_buildable

                    require_buildable(target)
                return target
        return cls(python=python, arch=arch, numpy=numpy)  # type: ignore[arg-type]  # __post_init__ raises

    @property
    def glibc(self) -> tuple[int, int]:
        return _GLIBC[self.python]

    @property
    def wheel_arch(self) -> str:
        return _WHEEL_ARCH[self.arch]

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def lambda_runtime(self) -> str:
        return "python" + self.python

    @property
    def platform_tags(self) -> list[str]:
        """manylinux tags, newest first, that the target's glibc can load (manylinux2014 = 2.17)."""
        major, top = self.glibc
        tags = [f"manylinux_{major}_{minor}_{self.wheel_arch}" for minor in range(top, 16, -1)]
        return tags + [f"manylinux2014_{self.wheel_arch}"]

    def describe(self) -> str:
        """Short tag summary for error messages: 'cp312-manylinux_2_34..2_17_x86_64'."""
        major, top = self.glibc
        return f"{self.abi}-manylinux_{major}_{top}..{major}_17_{self.wheel_arch}"

    @property
    def wheel_key(self) -> str:
        """Folder-name identity of the interpreter and architecture: which downloaded wheels fit."""
        return f"py{self.python}-{self.arch}"

    @property
    def key(self) -> str:
        """Folder-name identity of what the closure ships (PyPI's numpy keeps the key it always had)."""
        return self.wheel_key + ("" if self.numpy == "pypi" else f"-numpy-{self.numpy}")
