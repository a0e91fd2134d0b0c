"""CPU instruction sets that change what an int8 model computes, detected here and named for a target.

onnxruntime's MLAS picks its integer kernels by the CPU at load. The same int8 model therefore computes
differently per instruction set: on x86-64 without VNNI (AVX2 only) u8s8 products are added in pairs into
int16 with saturation (VPMADDUBSW), with VNNI / AMX they accumulate exactly in int32 (VPDPBUSD, TDPBUSD),
and arm64 uses its own dot-product (sdot/udot: `asimddp`) and matrix-multiply (smmla: `i8mm`) kernels.
Measured on all-MiniLM-L6-v2 (benchmarks/results/int8_isa.md), one int8-dynamic model gives mean cosine
0.9955 on an AVX-512 VNNI CPU and 0.9931 on AVX2. Recipes that compute in float (int8-weight folded at
load, fp32, fp16, MatMulNBits at accuracy_level 0) do not depend on these instructions.

So fidelity is measured on the build machine, the manifest says which instruction set that was
(`fidelity.isa`), and a recipe whose numerics depend on it gets a note (printed as a warning) when the
target named by `--cpu` (or the default, the build machine's architecture at its baseline) differs.

Targets, by what MLAS's integer kernels use:

    x86-64-avx2          AVX2, no VNNI: saturating pairwise int16 sums (AWS Lambda x86_64's guaranteed floor)
    x86-64-avx-vnni      AVX-VNNI (256-bit VPDPBUSD: Alder Lake and later client CPUs)
    x86-64-avx512-vnni   AVX-512 VNNI (Cascade Lake and later Xeons, AMD Zen 4+)
    x86-64-amx           AMX int8 tiles (Sapphire Rapids and later Xeons)
    arm64                ARMv8.0 NEON, no dot product
    arm64-dotprod        NEON dot product (Graviton2: what AWS Lambda arm64 runs)
    arm64-i8mm           int8 matrix multiply (Graviton3/4)
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

CpuTarget = Literal["x86-64-avx2", "x86-64-avx-vnni", "x86-64-avx512-vnni", "x86-64-amx",
                    "arm64", "arm64-dotprod", "arm64-i8mm"]
TARGETS: tuple[str, ...] = get_args(CpuTarget)
BASELINE = {"x86_64": "x86-64-avx2", "arm64": "arm64"}  # what any CPU of the architecture has
# Targets with integer dot products that make int8 activations (MatMulNBits accuracy_level 4, int8-dynamic)
# faster than float32 compute. Plain AVX2 has none: there accuracy_level 4 is still 1.7x slower than float
# (issue 14, measured on an AVX2 EPYC), so float activations (level 0) keep fidelity at a smaller cost.
INTEGER_DOT = frozenset({"x86-64-avx-vnni", "x86-64-avx512-vnni", "x86-64-amx", "arm64-dotprod", "arm64-i8mm"})
# Steps that multiply int8 activations whatever their options say.
INTEGER_STEPS = frozenset({"int8-dynamic", "int8-static"})
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Detected:
    """The build machine's CPU as the manifest records it."""

    isa: str  # one of TARGETS (or "x86-64" / "unknown" for CPUs below every target)
    flags: tuple[str, ...]  # the flags that decided it (avx2, avx512_vnni, asimddp...), for humans
    model: str

    def as_dict(self) -> dict[str, Any]:
        return {"measured_on": self.isa, "flags": list(self.flags), "cpu": self.model}


_X86_FLAGS = ("avx2", "avx_vnni", "avx512_vnni", "amx_int8")
_ARM_FLAGS = ("asimddp", "i8mm")


def arch_of(machine: str | None = None) -> str:
    """`x86_64` or `arm64` (the names Lambda and the profiles use) for platform.machine()."""
    machine = (machine or platform.machine()).lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64" if machine in ("x86_64", "amd64") else machine


def classify(flags: Iterable[str], arch: str) -> str:
    """The target name a CPU with these /proc/cpuinfo flags (`flags` on x86, `Features` on arm64) is."""
    have = set(flags)
    if arch == "arm64":
        return "arm64-i8mm" if "i8mm" in have else "arm64-dotprod" if "asimddp" in have else "arm64"
    if arch != "x86_64":
        return "unknown"
    for flag, name in (("amx_int8", "x86-64-amx"), ("avx512_vnni", "x86-64-avx512-vnni"),
                       ("avx_vnni", "x86-64-avx-vnni"), ("avx2", "x86-64-avx2")):
        if flag in have:
            return name
    return "x86-64"  # older than every target slimserve names (no AVX2)


def detect(cpuinfo: str | None = None, machine: str | None = None) -> Detected:
    """This machine's instruction set, read from /proc/cpuinfo (the first processor's flags)."""
    arch = arch_of(machine)
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags: list[str] = []
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = value.split()
        elif key in ("model name", "cpu part") and not model:
            model = value.strip()
    relevant = _ARM_FLAGS if arch == "arm64" else _X86_FLAGS
    return Detected(classify(flags, arch), tuple(f for f in relevant if f in flags), model or platform.processor())


def default_target(machine: str | None = None) -> str:
    """The target when none is named: the build machine's architecture at its baseline, never its own
    extensions (a serverless function runs on whatever CPU the provider gives)."""
    return BASELINE.get(arch_of(machine), "x86-64-avx2")


# The CPU a platform profile's architecture guarantees (build/compare --arch): AWS Lambda x86_64 runs on
# whatever AWS gives, AVX2 at least (often AVX-512 VNNI, never promised); every arm64 server CPU the
# profiles' providers run has the dot product (Graviton2+: Lambda arm64; Ampere Altra; Azure Cobalt).
PLATFORM_TARGETS = {"x86_64": "x86-64-avx2", "arm64": "arm64-dotprod"}


def platform_target(arch: str) -> str:
    """The target to assume for a platform's `arch` when the user names no --cpu."""
    return PLATFORM_TARGETS.get(arch_of(arch), default_target())


def has_integer_dot(target: str) -> bool:
    return target in INTEGER_DOT


def resolve(target: str | None) -> str:
    """`target` checked against TARGETS (None: the default target)."""
    if target is None:
        return default_target()
    if target not in TARGETS:
        from slimserve.errors import SlimserveError

        raise SlimserveError(f"unknown CPU target {target!r}", hint=f"name one of {', '.join(TARGETS)}")
    return target


def _dependent(step: str, options: Mapping[str, Any], details: Mapping[str, Any]) -> bool:
    name = str(details.get("delegate") or step)
    if name.split("(")[0] in INTEGER_STEPS:
        return True
    level = details.get("accuracy_level", options.get("accuracy_level"))
    if level == 4:  # MatMulNBits with int8 activations
        return True
    matmul = details.get("matmul", options.get("matmul"))
    return bool(matmul == "dq")  # ORT fuses DequantizeLinear -> MatMul into MatMulNBits accuracy_level 4


def dependent_steps(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The steps (manifest `steps` records) whose outputs depend on the CPU's integer instructions."""
    return [str(r["step"]) for r in records
            if _dependent(str(r["step"]).split("(")[0], r.get("options") or {}, r.get("details") or {})]


WARNING_PREFIX = "fidelity was measured on "


def record(records: Iterable[Mapping[str, Any]], target: str | None,
           detected: Detected | None = None) -> tuple[dict[str, Any], list[str]]:
    """(the manifest's `fidelity.isa`, notes): where fidelity was measured, for which target, and a warning
    when the recipe's integer matmuls will run other kernels on the target than they did here."""
    records = list(records)
    detected = detected or detect()
    named = [str(r["options"]["cpu"]) for r in records if (r.get("options") or {}).get("cpu")]
    target = resolve(target or (named[0] if named else None))
    steps = dependent_steps(records)
    section = {**detected.as_dict(), "target": target, "depends_on_isa": bool(steps)}
    notes = []
    if steps and target != detected.isa:
        notes.append(f"{WARNING_PREFIX}{detected.isa} (this machine) but the target is {target}: "
                     f"{', '.join(steps)} multiplies int8 activations with kernels that differ per instruction "
                     "set, so fidelity there can differ (one int8-dynamic MiniLM: mean cosine 0.9955 with VNNI, "
                     "0.9931 on AVX2; benchmarks/results/int8_isa.md); measure on the target, or pick a "
                     "float-compute recipe (int8-weight, int8-resident(accuracy_level=0)) whose numbers hold "
                     "everywhere")
    return section, notes


def is_warning(note: str) -> bool:
    """Whether a manifest note is the target-differs warning (commands print it as `warning:`)."""
    return note.startswith(WARNING_PREFIX)
