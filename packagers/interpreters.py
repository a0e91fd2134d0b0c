"""Find a CPython interpreter of a given version on this machine (pyenv installs, PATH, or ourselves)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    exe = shutil.which("pyenv")
    if exe:
        try:
            out = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=10, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def _patch(path: Path) -> tuple[int, ...]:
    digits = path.parent.parent.name.split(".")
    return tuple(int(d) if d.isdigit() else -1 for d in digits)


def find_python(version: str) -> Path | None:
    """A real (non-shim) `python{version}` executable, newest patch release first; None when absent."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version and not hasattr(sys, "real_prefix"):
        base = Path(sys.base_prefix) / "bin" / f"python{version}"
        if base.is_file():
            return base
    root = _pyenv_root()
    if root is not None:
        found = [p for p in (root / "versions").glob(f"{version}.*/bin/python{version}") if p.is_file()]
        found = [p for p in found if p.parent.parent.name.replace(".", "").isdigit()]
        if found:
            return max(found, key=_patch)
    on_path = shutil.which(f"python{version}")
    if on_path and "shims" not in Path(on_path).parts:
        return Path(on_path)
    return None
