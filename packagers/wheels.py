"""Pinned runtime wheels for a target: read the pins, download them with pip, unpack them.

pip's `--platform/--python-version/--implementation/--only-binary` route resolves wheels for another
interpreter and architecture without Docker. `--no-deps` keeps the closure to the pinned packages.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement

from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.target import Target

PINS_FILE = Path(__file__).resolve().parent / "runtime" / "requirements.txt"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def read_pins(target: Target, text: bool | str, path: Path = PINS_FILE) -> tuple[Pin, ...]:
    """The exact `name==version` pins that apply to `target` (markers see the target's Python).

    `text` is the requirements extra to include ("text", "image", ""); a bool means "text" or none."""
    env = {"python_version": target.python, "python_full_version": target.python + ".0",
           "platform_machine": target.wheel_arch, "sys_platform": "linux", "platform_system": "Linux",
           "implementation_name": "cpython", "extra": ("text" if text else "") if isinstance(text, bool) else text}
    pins: dict[str, Pin] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise SlimserveError(f"{path}:{number}: not a requirement: {exc}") from None
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise SlimserveError(f"{path}:{number}: {req.name} must be pinned with == (got {req.specifier})")
        if req.marker is not None and not Marker(str(req.marker)).evaluate(env):
            continue
        if req.name in pins:
            raise SlimserveError(f"{path}:{number}: {req.name} is pinned twice for Python {target.python}")
        pins[req.name] = Pin(req.name, specs[0].version)
    return tuple(sorted(pins.values(), key=lambda p: p.name))


def download_wheel(pin: Pin, target: Target, dest: Path) -> Path:
    """One wheel for `target`, from the configured package index; a one-line ToolError otherwise.

    `dest` is a download cache shared across runs; wheels go to a per-target subfolder.
    """
    dest = dest / target.wheel_key
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "-q",
           "--only-binary=:all:", "--no-deps", "--implementation", "cp", "--python-version", target.python,
           "--abi", target.abi, "--abi", "abi3", "--abi", "none", "-d", str(dest), str(pin)]
    for tag in target.platform_tags:
        cmd += ["--platform", tag]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("ERROR")]
        why = lines[0] if lines else (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        if "No matching distribution" in why or "Could not find a version" in why:
            why = "no wheel on the index for these tags"
        raise ToolError(
            f"cannot get {pin} for {target.describe()}: {why[:200]}",
            hint="check network access to the package index, or choose another --python/--arch",
        )
    new = sorted(set(dest.glob("*.whl")) - before) or _matching(dest, pin, target)
    if not new:
        raise ToolError(f"pip reported success but no wheel for {pin} appeared in {dest}")
    return new[0]


def _matching(dest: Path, pin: Pin, target: Target) -> list[Path]:
    """Wheels already in `dest` (pip skips the download) for this pin, ABI and architecture."""
    stem = pin.name.replace("-", "_").lower() + "-" + pin.version + "-"
    found = []
    for path in sorted(dest.glob("*.whl")):
        name = path.name.lower()
        parts = name[:-4].split("-")
        platform_ok = target.wheel_arch in parts[-1] or parts[-1] == "any"  # pure wheels (waitress) fit all
        if name.startswith(stem) and parts[-2] in (target.abi, "abi3", "none") and platform_ok:
            found.append(path)
    return found


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Install a wheel's files into `site` (a site-packages layout) the way an installer would.

    `*.data/purelib|platlib` move to the root; `*.data/scripts|headers|data` are dropped (inference never
    uses them). The executable bit is kept only where the wheel sets it.
    """
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            if ".." in Path(name).parts or name.startswith("/"):
                raise ToolError(f"{wheel.name} holds an unsafe path {info.filename!r}")
            out = site / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            mode = (info.external_attr >> 16) & 0o777
            out.chmod(0o755 if mode & 0o111 else 0o644)
