"""The one report value `slimserve compare` produces, and the table of its renderers.

The pipeline (`slimserve.pipeline.compare`) measures and decides, then builds a `Comparison`; each output format is
its own module with the same `render(comparison, out)` signature, chosen from `RENDERERS`. This module
imports only kernel values (measurements, verdicts, profiles), never the pipeline, so renderers that
import it cannot form a cycle with the code that calls them.

Candidates stay in the order the recipes were given (the user's order, the same on every run); platforms
in the order `check.resolve_profiles` gives them (by name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from slimserve.measure import ColdStart, PackageSize
from slimserve.measure.latency import Latency
from slimserve.profiles.rules import PlatformVerdict
from slimserve.profiles.schema import Profile
from slimserve.report import load_renderer
from slimserve.selection import SizeTolerance

SCHEMA_VERSION = 1

# format name -> module under slimserve.report (imported when used, so rich loads only for text output)
RENDERERS: dict[str, str] = {"text": "compare_text", "json": "compare_json", "markdown": "compare_markdown"}
FORMATS = tuple(RENDERERS)


@dataclass(frozen=True)
class CompareOptions:
    python: str = "3.12"
    arch: str = "x86_64"
    numpy: str = "pypi"  # the runtime closure's numpy build (packagers.target.NUMPY_BUILDS)
    memory_mb: int | None = None  # judge platforms at this setting (default: each one's recommendation)
    runs: int = 3  # fresh processes per cold-start measurement
    latency_runs: int = 20
    jobs: int = 1  # threads for building candidates; measuring is always one at a time
    cpu: str | None = None  # target CPU (optimizer/isa.py TARGETS); None: what `arch` guarantees (isa.platform_target)
    min_fidelity: float | None = None  # floor for the recommendation (default: the metric's, slimserve.tasks)
    size_tolerance: SizeTolerance = field(default_factory=SizeTolerance)  # sizes this close count as equal


@dataclass(frozen=True)
class Fidelity:
    """A candidate's fidelity as its manifest records it (the family's metric; mean and worst sample)."""

    metric: str
    mean: float
    min: float
    samples: int | None = None
    reference: str | None = None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Fidelity | None:
        """The manifest's `fidelity` section, or None when it has no mean (nothing to rank by)."""
        fid = manifest.get("fidelity")
        if not isinstance(fid, Mapping) or not isinstance(fid.get("mean"), (int, float)):
            return None
        worst = fid.get("min")
        samples = fid.get("samples")
        reference = fid.get("reference")
        return cls(metric=str(fid.get("metric", "cosine")), mean=float(fid["mean"]),
                   min=float(worst) if isinstance(worst, (int, float)) else float(fid["mean"]),
                   samples=int(samples) if isinstance(samples, int) else None,
                   reference=str(reference) if reference is not None else None)


@dataclass(frozen=True)
class Machine:
    """The CPU the numbers were measured on, and the instruction sets int8 speed depends on."""

    cpu: str = "?"
    cpus: int | None = None
    arch: str = ""
    vnni: tuple[str, ...] = ()
    avx512: bool = False
    avx2: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape compare.json and the benchmarks record."""
        return {"cpu": self.cpu, "cpus": self.cpus, "arch": self.arch, "vnni": list(self.vnni),
                "avx512": self.avx512, "avx2": self.avx2}


@dataclass(frozen=True)
class CandidateResult:
    """One recipe's candidate and everything measured on it (None where a step failed: see `error`)."""

    recipe: str
    folder: str  # relative to OUT
    model_bytes: int = 0
    fidelity: Fidelity | None = None
    package: PackageSize | None = None
    cold_start: ColdStart | None = None
    latency: Latency | None = None
    verdicts: tuple[PlatformVerdict, ...] = ()
    build_seconds: float = 0.0
    measure_seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.fidelity is not None and self.package is not None \
            and self.cold_start is not None

    def verdict(self, name: str) -> PlatformVerdict | None:
        return next((v for v in self.verdicts if v.name == name), None)


@dataclass(frozen=True)
class Comparison:
    model: str
    source: Mapping[str, str | None]  # kind, path, sha256, reference
    eval_source: str
    options: CompareOptions
    platforms: tuple[Profile, ...]
    candidates: tuple[CandidateResult, ...]
    frontier: tuple[str, ...]
    recommendation: str | None
    recommendation_reason: str
    versions: Mapping[str, str] = field(default_factory=dict)
    machine: Machine = field(default_factory=Machine)
    # What compare.png drew (points, limits, size), read back from matplotlib; empty until it is drawn.
    plot: Mapping[str, Any] = field(default_factory=dict)

    def candidate(self, recipe: str) -> CandidateResult:
        return next(c for c in self.candidates if c.recipe == recipe)

    @property
    def measured(self) -> list[CandidateResult]:
        return [c for c in self.candidates if c.ok]


def platform_reason(v: PlatformVerdict) -> str:
    """Why a platform fits or not, in one line: the failing findings' reasons, or the memory it fits at."""
    failed = [f.reason for f in v.findings if f.status == "fail"]
    if failed:
        return "; ".join(failed)
    at = f" at {v.memory_mb:,} MB" if v.memory_mb is not None else ""
    warned = [f.reason for f in v.findings if f.status == "warn"]
    return f"fits{at}" + (f" (warning: {'; '.join(warned)})" if warned else "")


def renderer(fmt: str) -> Callable[[Comparison, TextIO], None]:
    render: Callable[[Comparison, TextIO], None] = load_renderer(RENDERERS, fmt)
    return render
