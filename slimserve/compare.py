"""The `compare` pipeline: one export, many recipes, every candidate measured the same way, side by side.

    prepare once ─┬─ make_candidate(recipe 1) ─┐   (optionally `jobs` threads: building only)
                  ├─ make_candidate(recipe 2) ─┤
                  └─ ...                       ┘
    then, one candidate at a time (so measurements never disturb each other):
        deployment size (packagers.lambda_target) + cold start / peak RSS (measure.coldstart), each once,
        held against every platform by `check.check_facts`; warm latency (measure.latency)
    → Pareto frontier (selection.pareto_frontier) and a recommendation (selection.choose)
    → OUT/compare.json, compare.md, compare.png, candidates/<recipe>/

No printing, no exit codes. A recipe that fails becomes a row with its error; the rest go on.
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimserve.atomic import atomic_dir
from slimserve.errors import SlimserveError, first_line
from slimserve.manifest import library_versions
from slimserve.measure import ColdStart, PackageSize
from slimserve.measure.latency import Latency
from slimserve.profiles.rules import PlatformVerdict
from slimserve.profiles.schema import Profile
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.selection import Budgets, Row, choose, pareto_frontier

SCHEMA_VERSION = 1
DEFAULT_PLATFORMS = ("aws-lambda-zip", "aws-lambda-container")
DEFAULT_RECIPES = ("fp32", "fp16", "int8", "int8-dynamic", "int4-weight")
# The recommendation (no budgets given) is the smallest, then fastest-starting, candidate that fits every
# chosen platform and keeps at least this mean cosine: the level below which embeddings visibly drift.
DEFAULT_MIN_FIDELITY = 0.99
CANDIDATES_DIR = "candidates"


@dataclass(frozen=True)
class CompareOptions:
    python: str = "3.12"
    arch: str = "x86_64"
    memory_mb: int | None = None  # judge platforms at this setting (default: each one's recommendation)
    runs: int = 3  # fresh processes per cold-start measurement
    latency_runs: int = 20
    jobs: int = 1  # threads for building candidates; measuring is always one at a time
    min_fidelity: float | None = None  # floor for the recommendation (default DEFAULT_MIN_FIDELITY)


@dataclass(frozen=True)
class CandidateResult:
    """One recipe's candidate and everything measured on it (None where a step failed: see `error`)."""

    recipe: str
    folder: str  # relative to OUT
    manifest: Mapping[str, Any] | None = None
    package: PackageSize | None = None
    cold_start: ColdStart | None = None
    latency: Latency | None = None
    verdicts: tuple[PlatformVerdict, ...] = ()
    build_seconds: float = 0.0
    measure_seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.manifest is not None and self.package is not None \
            and self.cold_start is not None

    @property
    def fidelity(self) -> Mapping[str, Any]:
        return (self.manifest or {}).get("fidelity") or {}

    @property
    def model_bytes(self) -> int:
        return int((self.manifest or {}).get("model", {}).get("bytes") or 0)

    def verdict(self, name: str) -> PlatformVerdict | None:
        return next((v for v in self.verdicts if v.name == name), None)

    def row(self, cold_start_ms: float | None = None) -> Row:
        """This candidate as selection sees it; `cold_start_ms` overrides the one measured here."""
        assert self.ok and self.package is not None and self.cold_start is not None
        return Row(recipe=self.recipe, fidelity_mean=float(self.fidelity.get("mean", 0.0)),
                   fidelity_min=float(self.fidelity.get("min", 0.0)), model_bytes=self.model_bytes,
                   deploy_bytes=self.package.unzipped_bytes,
                   cold_start_ms=self.cold_start.total_ms if cold_start_ms is None else cold_start_ms,
                   fits={v.name: v.fits for v in self.verdicts},
                   reasons={v.name: platform_reason(v) for v in self.verdicts})


@dataclass(frozen=True)
class Comparison:
    model: str
    source: Mapping[str, Any]
    eval_source: str
    options: CompareOptions
    platforms: tuple[Profile, ...]
    candidates: tuple[CandidateResult, ...]
    frontier: tuple[str, ...]
    recommendation: str | None
    recommendation_reason: str
    versions: Mapping[str, str] = field(default_factory=dict)
    machine: Mapping[str, Any] = field(default_factory=dict)

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


def machine_info() -> dict[str, Any]:
    """CPU model and the instruction sets int8 speed depends on (VNNI), for reading numbers honestly."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "arch": platform.machine(),
            "vnni": sorted(f for f in flags if "vnni" in f),
            "avx512": any(f.startswith("avx512") for f in flags), "avx2": "avx2" in flags}


# --- assembling results (pure: tests feed synthetic measurements through the real rules) ----------------

def evaluate_candidate(result: CandidateResult, profiles: Sequence[Profile], options: CompareOptions,
                       path: str = "") -> CandidateResult:
    """Hold one candidate's measured facts against every platform (no measuring here)."""
    from slimserve.check import CheckOptions, check_facts
    from slimserve.profiles.rules import DeploymentFacts

    if result.package is None or result.cold_start is None:
        return result
    fidelity = result.fidelity
    facts = DeploymentFacts(package=result.package, cold_start=result.cold_start, python=options.python,
                            arch=options.arch,
                            fidelity_mean=_num(fidelity.get("mean")), fidelity_min=_num(fidelity.get("min")))
    report = check_facts(path or result.folder, profiles, facts, CheckOptions(
        memory_mb=options.memory_mb, python=options.python, arch=options.arch))
    return replace(result, verdicts=report.platforms)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def recommend(candidates: Sequence[CandidateResult], profiles: Sequence[Profile],
              min_fidelity: float | None) -> tuple[str | None, str]:
    """Smallest deployment (then fastest cold start) that fits every platform above the fidelity floor."""
    floor = DEFAULT_MIN_FIDELITY if min_fidelity is None else min_fidelity
    names = [p.name for p in profiles]
    rows = [c.row() for c in candidates if c.ok and all(c.row().fits.get(n, False) for n in names)]
    pick = choose(rows, Budgets(min_fidelity=floor))
    where = " and ".join(names)
    if pick is None:
        return None, (f"no candidate fits {where} with mean cosine ≥ {floor}: "
                      "try other recipes, a lower --min-fidelity, or another platform")
    return pick.recipe, (f"smallest deployment that fits {where} with mean cosine ≥ {floor} "
                         f"({pick.fidelity_mean:.4f}), then fastest cold start")


def assemble(model: str, source: Mapping[str, Any], eval_source: str, options: CompareOptions,
             profiles: Sequence[Profile], candidates: Sequence[CandidateResult]) -> Comparison:
    """Frontier and recommendation over measured candidates; failed ones stay in the table."""
    measured = [c for c in candidates if c.ok]
    frontier = tuple(pareto_frontier([c.row() for c in measured]))
    pick, why = recommend(measured, profiles, options.min_fidelity)
    return Comparison(model=model, source=dict(source), eval_source=eval_source, options=options,
                      platforms=tuple(profiles), candidates=tuple(candidates), frontier=frontier,
                      recommendation=pick, recommendation_reason=why, versions=library_versions(),
                      machine=machine_info())


# --- the pipeline ------------------------------------------------------------------------------------

def validate(recipes: Sequence[str], platforms: Sequence[str | Profile], options: CompareOptions,
             profile_files: Sequence[Path] = ()) -> list[Profile]:
    """Everything that can be wrong with the input, before minutes of exporting."""
    from slimserve.check import CheckOptions, resolve_profiles, validate_options
    from slimserve.optimizer.recipes import parse_recipe
    from slimserve.packagers.target import Target

    if not recipes:
        raise SlimserveError("no recipe to compare", hint="pass --recipes a,b,c or --all")
    if len(set(recipes)) != len(recipes):
        dup = next(r for r in recipes if list(recipes).count(r) > 1)
        raise SlimserveError(f"recipe {dup!r} is listed twice")
    for recipe in recipes:
        parse_recipe(recipe)
    if options.jobs < 1:
        raise SlimserveError(f"--jobs must be at least 1, got {options.jobs}")
    if options.min_fidelity is not None and not 0 < options.min_fidelity <= 1:
        raise SlimserveError(f"--min-fidelity is a mean cosine in (0, 1], got {options.min_fidelity}")
    profiles = resolve_profiles(list(platforms) or list(DEFAULT_PLATFORMS), profile_files)
    validate_options(CheckOptions(memory_mb=options.memory_mb, runs=options.runs), profiles)
    Target.parse(options.python, options.arch)  # validates with one line
    return profiles


def build_candidates(prepared: Any, recipes: Sequence[str], root: Path, jobs: int,
                     progress: Progress = NULL_PROGRESS) -> dict[str, CandidateResult]:
    """make_candidate for each recipe into root/<recipe>; `jobs` threads at most. Failures are kept."""
    from slimserve.optimizer.optimize import make_candidate

    def one(recipe: str) -> CandidateResult:
        folder = root / recipe
        started = time.perf_counter()
        try:
            with atomic_dir(folder) as staging:
                manifest = make_candidate(prepared, recipe, staging, progress)
        except SlimserveError as exc:
            return CandidateResult(recipe, f"{CANDIDATES_DIR}/{recipe}", error=exc.message,
                                   build_seconds=time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001  # a step crashing on this model: one row says so, the others go on
            return CandidateResult(recipe, f"{CANDIDATES_DIR}/{recipe}", error=f"{type(exc).__name__}: {first_line(exc)}",
                                   build_seconds=time.perf_counter() - started)
        return CandidateResult(recipe, f"{CANDIDATES_DIR}/{recipe}", manifest=manifest,
                               build_seconds=time.perf_counter() - started)

    with progress.stage(f"build {len(recipes)} candidates ({jobs} at a time)", total=len(recipes)) as stage:
        if jobs == 1:
            results = {}
            for recipe in recipes:
                results[recipe] = one(recipe)
                stage.advance()
            return results
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="candidate") as pool:
            futures = {pool.submit(one, r): r for r in recipes}
            results = {}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
                stage.advance()
        return {r: results[r] for r in recipes}


def measure_candidate(result: CandidateResult, folder: Path, options: CompareOptions,
                      progress: Progress = NULL_PROGRESS) -> CandidateResult:
    """Deployment size, cold start + peak RSS and warm latency of one candidate: each measured once."""
    from slimserve.bundle import load_bundle
    from slimserve.check import measure_cold_start, measure_package
    from slimserve.measure.latency import measure_latency
    from slimserve.packagers.target import Target

    if result.error is not None:
        return result
    started = time.perf_counter()
    target = Target.parse(options.python, options.arch)
    try:
        bundle = load_bundle(folder)
        with progress.stage(f"{result.recipe}: deployment size"):
            package = measure_package(bundle, target)
        with progress.stage(f"{result.recipe}: cold start ({options.runs} fresh processes)"):
            cold = measure_cold_start(bundle, target, options.runs)
        with progress.stage(f"{result.recipe}: warm latency (batch 1 and 8)"):
            latency = measure_latency(folder, runs=options.latency_runs)
    except SlimserveError as exc:
        return replace(result, error=f"measuring failed: {exc.message}")
    return replace(result, package=package, cold_start=cold, latency=latency,
                   measure_seconds=time.perf_counter() - started)


def compare_into(staging: Path, model: str, recipes: Sequence[str], profiles: Sequence[Profile],
                 options: CompareOptions, eval_path: Path | None = None, progress: Progress = NULL_PROGRESS,
                 *, prepared: Any = None, source: Any = None) -> Comparison:
    """Build, measure and write the comparison into `staging` (an empty folder owned by the caller)."""
    from slimserve.optimizer.optimize import prepare
    from slimserve.optimizer.sources import resolve_source

    with tempfile.TemporaryDirectory(prefix="slimserve-compare-") as work:
        if prepared is None:
            source = source if source is not None else resolve_source(model)
            prepared = prepare(source, Path(work), eval_path, progress)
        root = staging / CANDIDATES_DIR
        root.mkdir(parents=True, exist_ok=True)
        built = build_candidates(prepared, recipes, root, options.jobs, progress)
    if not any(c.error is None for c in built.values()):
        errors = "; ".join(f"{r}: {c.error}" for r, c in built.items())
        raise SlimserveError(f"every recipe failed on this model ({errors})",
                             hint="rerun with --debug, or try other recipes")
    results = []
    for recipe in recipes:
        measured = measure_candidate(built[recipe], root / recipe, options, progress)
        results.append(evaluate_candidate(measured, profiles, options))
    src = {"kind": prepared.source.kind, "path": prepared.extra.get("source_path"),
           "sha256": prepared.source_sha256, "reference": prepared.exported.reference_kind}
    comparison = assemble(model, src, prepared.eval_source, options, profiles, results)
    write_outputs(staging, comparison)
    return comparison


def write_outputs(folder: Path, comparison: Comparison) -> dict[str, Any]:
    """compare.png (first: its plotted points go into the JSON), compare.json and compare.md."""
    import json

    from slimserve.report.compare_markdown import render_markdown
    from slimserve.report.compare_plot import render_png

    plot = render_png(comparison, folder / "compare.png")
    data = comparison_dict(comparison, plot)
    (folder / "compare.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "compare.md").write_text(render_markdown(comparison), encoding="utf-8")
    return data


def run_compare(model: str, recipes: Sequence[str], out: Path, eval_path: Path | None = None,
                platforms: Sequence[str | Profile] = DEFAULT_PLATFORMS, jobs: int = 1,
                options: CompareOptions | None = None, progress: Progress = NULL_PROGRESS, *,
                profile_files: Sequence[Path] = (), prepared: Any = None, source: Any = None) -> Comparison:
    """Compare `recipes` on `model` and write OUT atomically. `prepared` reuses an earlier export;
    `source` is an already resolved model source (default: `resolve_source(model)`)."""
    from slimserve.optimizer.sources import resolve_source

    options = options or CompareOptions()
    if jobs != 1:
        options = replace(options, jobs=jobs)
    profiles = validate(recipes, platforms, options, profile_files)
    if prepared is None and source is None:
        source = resolve_source(model)
    with atomic_dir(Path(out)) as staging:
        return compare_into(staging, model, recipes, profiles, options, eval_path, progress,
                            prepared=prepared, source=source)


# --- compare.json ------------------------------------------------------------------------------------

def candidate_dict(c: CandidateResult, frontier: Sequence[str]) -> dict[str, Any]:
    fid = c.fidelity
    cs = c.cold_start
    out: dict[str, Any] = {
        "recipe": c.recipe, "folder": c.folder, "frontier": c.recipe in frontier, "error": c.error,
        "bytes": c.model_bytes if c.manifest else None,
        "deploy": None if c.package is None else {
            "unzipped_bytes": c.package.unzipped_bytes, "zipped_bytes": c.package.zipped_bytes,
            "parts": dict(sorted(c.package.parts.items()))},
        "fidelity": None if not fid else {k: fid.get(k) for k in ("metric", "mean", "min", "samples", "reference")
                                          if k in fid},
        "latency": None if c.latency is None else {
            "batch1_ms": c.latency.batch1_ms, "batch8_ms": c.latency.batch8_ms, "load_ms": c.latency.load_ms,
            "batch_sizes": list(c.latency.batch_sizes),
            "runs": c.latency.runs, "threads": c.latency.threads, "statistic": "median"},
        "cold_start": None if cs is None else {
            "import_ms": round(cs.import_ms, 1), "load_ms": round(cs.load_ms, 1),
            "first_inference_ms": round(cs.first_inference_ms, 1), "total_ms": round(cs.total_ms, 1),
            "runs": cs.runs, "python": cs.python, "fallback": cs.fallback, "measured_here": True},
        "peak_rss_mb": None if cs is None else round(cs.peak_rss_mb, 1),
        "platforms": {v.name: {"fits": v.fits, "reason": platform_reason(v), "memory_mb": v.memory_mb,
                               "recommended_memory_mb": v.recommended_memory_mb,
                               "failed": [f.id for f in v.findings if f.status == "fail"]}
                      for v in c.verdicts},
        "seconds": {"build": round(c.build_seconds, 2), "measure": round(c.measure_seconds, 2)},
    }
    return out


def comparison_dict(comparison: Comparison, plot: Mapping[str, Any] | None = None) -> dict[str, Any]:
    o = comparison.options
    return {
        "schema": SCHEMA_VERSION,
        "model": comparison.model,
        "source": dict(comparison.source),
        "eval": comparison.eval_source,
        "target": {"python": o.python, "arch": o.arch, "memory_mb": o.memory_mb},
        "platforms": [p.name for p in comparison.platforms],
        "recommendation": None if comparison.recommendation is None else {
            "recipe": comparison.recommendation, "why": comparison.recommendation_reason},
        "recommendation_note": comparison.recommendation_reason,
        "frontier": list(comparison.frontier),
        "candidates": [candidate_dict(c, comparison.frontier) for c in comparison.candidates],
        "method": {
            "cold_start": f"median of {o.runs} fresh `-I -S` interpreters that see only the Lambda layout "
                          "(layer + function), measured on this machine",
            "latency": f"median of {o.latency_runs} warm calls in this process, 1 thread, batch 1 and 8",
            "deploy": "bytes of layer.zip + function.zip as `package` builds them (unzipped and zipped)",
            "frontier": "not dominated on (mean fidelity, unzipped deployment bytes, cold start)",
            "measuring": "one candidate at a time; --jobs parallelises only building candidates",
        },
        "plot": dict(plot or {}),
        "machine": dict(comparison.machine),
        "versions": dict(comparison.versions),
    }
