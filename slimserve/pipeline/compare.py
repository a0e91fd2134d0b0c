"""The `compare` pipeline: one export, many recipes, every candidate measured the same way, side by side.

    prepare once ─┬─ make_candidate(recipe 1) ─┐   (optionally `jobs` threads: building only)
                  ├─ make_candidate(recipe 2) ─┤
                  └─ ...                       ┘
    then, one candidate at a time (so measurements never disturb each other):
        deployment size (packagers.lambda_target) + cold start / peak RSS (measure.coldstart), each once,
        held against every platform by `check.check_facts`; warm latency (measure.latency)
    → Pareto frontier (selection.pareto_frontier) and a recommendation (selection.explain_choice)
    → one report value, `Comparison` (slimserve.report.comparison), which the renderers in
      slimserve.report.compare_* turn into OUT/compare.json, compare.md (and compare_plot into compare.png)
      beside candidates/<recipe>/; the CLI picks one of the same renderers for stdout

No printing, no exit codes. A recipe that fails becomes a row with its error; the rest go on.
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from slimserve.atomic import atomic_dir
from slimserve.errors import SlimserveError, first_line
from slimserve.manifest import library_versions
from slimserve.measure import ColdStart, PackageSize
from slimserve.profiles.schema import Profile
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.report.comparison import (
    CandidateResult,
    CompareOptions,
    Comparison,
    Fidelity,
    Machine,
    platform_reason,
)
from slimserve.selection import Budgets, Row, SizeTolerance, explain_choice, pareto_frontier
from slimserve.tasks import default_min_fidelity, ranked_metric

__all__ = ["CandidateResult", "CompareOptions", "Comparison", "Fidelity", "Machine", "platform_reason"]

DEFAULT_PLATFORMS = ("aws-lambda-zip", "aws-lambda-container")
DEFAULT_RECIPES = ("fp32", "fp16", "int8", "int8-dynamic", "int4-weight")
# The recommendation (no budgets given) is the smallest, then fastest-starting, candidate that fits every
# chosen platform and keeps at least this mean cosine: the level below which embeddings visibly drift.
CANDIDATES_DIR = "candidates"
OUTPUT_FILES = ("compare.json", "compare.md")  # written by these renderers; compare.png by compare_plot


def candidate_row(c: CandidateResult, cold_start_ms: float | None = None) -> Row:
    """A measured candidate as selection sees it; `cold_start_ms` overrides the one measured here."""
    if c.package is None or c.cold_start is None or c.fidelity is None:
        raise ValueError(f"candidate {c.recipe} was not measured")
    return Row(recipe=c.recipe, fidelity_mean=c.fidelity.mean, fidelity_min=c.fidelity.min,
               model_bytes=c.model_bytes, deploy_bytes=c.package.unzipped_bytes,
               cold_start_ms=c.cold_start.total_ms if cold_start_ms is None else cold_start_ms,
               fits={v.name: v.fits for v in c.verdicts},
               reasons={v.name: platform_reason(v) for v in c.verdicts},
               warm_ms=c.latency.batch1_ms if c.latency is not None else None)


def machine_info() -> Machine:
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
    return Machine(cpu=model, cpus=os.cpu_count(), arch=platform.machine(),
                   vnni=tuple(sorted(f for f in flags if "vnni" in f)),
                   avx512=any(f.startswith("avx512") for f in flags), avx2="avx2" in flags)


# --- assembling results (pure: tests feed synthetic measurements through the real rules) ----------------

def evaluate_candidate(result: CandidateResult, profiles: Sequence[Profile], options: CompareOptions,
                       path: str = "") -> CandidateResult:
    """Hold one candidate's measured facts against every platform (no measuring here)."""
    from slimserve.pipeline.check import CheckOptions, check_facts
    from slimserve.profiles.rules import DeploymentFacts

    if result.package is None or result.cold_start is None:
        return result
    fidelity = result.fidelity
    facts = DeploymentFacts(package=result.package, cold_start=result.cold_start, python=options.python,
                            arch=options.arch, fidelity_mean=fidelity.mean if fidelity else None,
                            fidelity_min=fidelity.min if fidelity else None,
                            fidelity_metric=ranked_metric(fidelity.metric if fidelity else None))
    report = check_facts(path or result.folder, profiles, facts, CheckOptions(
        memory_mb=options.memory_mb, python=options.python, arch=options.arch, numpy=options.numpy))
    return replace(result, verdicts=report.platforms)


def recommend(candidates: Sequence[CandidateResult], profiles: Sequence[Profile],
              min_fidelity: float | None, tolerance: SizeTolerance | None = None) -> tuple[str | None, str]:
    """What `build` would choose among the candidates that fit every platform above the fidelity floor
    (--min-fidelity, else the default of the task's metric: slimserve.tasks): the most faithful within the
    size tolerance of the smallest deployment (selection.explain_choice)."""
    metric = ranked_metric(next((c.fidelity.metric for c in candidates if c.fidelity is not None), None))
    floor = default_min_fidelity(metric) if min_fidelity is None else min_fidelity
    label = "mean cosine" if metric == "cosine" else f"mean {metric}"
    names = [p.name for p in profiles]
    rows = [candidate_row(c) for c in candidates if c.ok and all(candidate_row(c).fits.get(n, False) for n in names)]
    choice = explain_choice(rows, Budgets(min_fidelity=floor), tolerance)
    where = " and ".join(names)
    if choice is None:
        return None, (f"no candidate fits {where} with {label} ≥ {floor}: "
                      "try other recipes, a lower --min-fidelity, or another platform")
    return choice.winner.recipe, f"{choice.why}; among the candidates that fit {where} with {label} ≥ {floor}"


def assemble(model: str, source: Mapping[str, str | None], eval_source: str, options: CompareOptions,
             profiles: Sequence[Profile], candidates: Sequence[CandidateResult]) -> Comparison:
    """Frontier and recommendation over measured candidates; failed ones stay in the table."""
    measured = [c for c in candidates if c.ok]
    frontier = tuple(pareto_frontier([candidate_row(c) for c in measured]))
    pick, why = recommend(measured, profiles, options.min_fidelity, options.size_tolerance)
    return Comparison(model=model, source=dict(source), eval_source=eval_source, options=options,
                      platforms=tuple(profiles), candidates=tuple(candidates), frontier=frontier,
                      recommendation=pick, recommendation_reason=why, versions=library_versions(),
                      machine=machine_info())


# --- the pipeline ------------------------------------------------------------------------------------

def validate(recipes: Sequence[str], platforms: Sequence[str | Profile], options: CompareOptions,
             profile_files: Sequence[Path] = ()) -> list[Profile]:
    """Everything that can be wrong with the input, before minutes of exporting."""
    from slimserve.optimizer.recipes import parse_recipe
    from slimserve.packagers.target import Target
    from slimserve.pipeline.check import CheckOptions, resolve_profiles, validate_options

    if not recipes:
        raise SlimserveError("no recipe to compare", hint="pass --recipes a,b,c or --all")
    if len(set(recipes)) != len(recipes):
        dup = next(r for r in recipes if list(recipes).count(r) > 1)
        raise SlimserveError(f"recipe {dup!r} is listed twice")
    for recipe in recipes:
        parse_recipe(recipe)
    if options.jobs < 1:
        raise SlimserveError(f"--jobs must be at least 1, got {options.jobs}")
    tolerance = options.size_tolerance
    if not (0 <= tolerance.pct < float("inf") and 0 <= tolerance.mib < float("inf")):
        raise SlimserveError(f"the size tolerance must be a non-negative number, got {tolerance.pct:g}% and "
                             f"{tolerance.mib:g} MiB", hint="0 and 0 choose strictly the smallest deployment")
    if options.min_fidelity is not None and not 0 < options.min_fidelity <= 1:
        raise SlimserveError(f"--min-fidelity is a fidelity in (0, 1] (the task's metric), got {options.min_fidelity}")
    profiles = resolve_profiles(list(platforms) or list(DEFAULT_PLATFORMS), profile_files)
    validate_options(CheckOptions(memory_mb=options.memory_mb, runs=options.runs), profiles)
    Target.parse(options.python, options.arch, options.numpy)  # validates with one line
    return profiles


def built_candidate(recipe: str, manifest: Mapping[str, Any], seconds: float) -> CandidateResult:
    """A freshly built candidate, its manifest read into typed values once, here."""
    model = manifest.get("model")
    size = model.get("bytes") if isinstance(model, Mapping) else None
    return CandidateResult(recipe, f"{CANDIDATES_DIR}/{recipe}", model_bytes=int(size or 0),
                           fidelity=Fidelity.from_manifest(manifest), build_seconds=seconds)


def build_candidates(prepared: Any, recipes: Sequence[str], root: Path, jobs: int,
                     progress: Progress = NULL_PROGRESS, cpu: str | None = None) -> dict[str, CandidateResult]:
    """make_candidate for each recipe into root/<recipe>; `jobs` threads at most. Failures are kept."""
    from slimserve.optimizer.optimize import make_candidate

    def one(recipe: str) -> CandidateResult:
        folder = root / recipe
        started = time.perf_counter()
        try:  # one progress row per candidate: its steps and evaluation show inside it
            with progress.stage(f"candidate {recipe}"), atomic_dir(folder) as staging:
                manifest = make_candidate(prepared, recipe, staging, progress, cpu=cpu)
        except SlimserveError as exc:
            return CandidateResult(recipe, f"{CANDIDATES_DIR}/{recipe}", error=exc.message,
                                   build_seconds=time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001  # a step crashing on this model: one row says so, the others go on
            return CandidateResult(recipe, f"{CANDIDATES_DIR}/{recipe}", error=f"{type(exc).__name__}: {first_line(exc)}",
                                   build_seconds=time.perf_counter() - started)
        return built_candidate(recipe, manifest, time.perf_counter() - started)

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


LATENCY_ROUNDS = 3  # warm latency is measured in this many interleaved rounds (cold start: one per --runs)


def rotated(items: Sequence[str], turn: int) -> list[str]:
    """`items` starting at position `turn`: A B C, B C A, C A B ... so no candidate always runs first."""
    k = turn % len(items) if items else 0
    return [*items[k:], *items[:k]]


def measure_candidates(built: Mapping[str, CandidateResult], root: Path, options: CompareOptions,
                       progress: Progress = NULL_PROGRESS) -> dict[str, CandidateResult]:
    """Deployment size, cold start + peak RSS and warm latency of every candidate, the timed parts in
    interleaved rounds (each round measures every candidate once, in a rotated order), so a machine
    that slows down for a minute slows every candidate alike instead of ranking one of them 1.3x apart.
    Medians over the rounds; the rounds are kept for the spread the reports show."""
    from slimserve.bundle import load_bundle
    from slimserve.measure import coldstart, latency
    from slimserve.packagers.target import Target
    from slimserve.pipeline.check import measure_cold_start, measure_package

    target = Target.parse(options.python, options.arch, options.numpy)
    results = dict(built)
    bundles: dict[str, Any] = {}
    packages: dict[str, PackageSize] = {}
    seconds = {recipe: 0.0 for recipe in built}

    def attempt(recipe: str, what: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`what(*args, **kwargs)`, its time counted to `recipe`; a failure marks the candidate, not the run."""
        started = time.perf_counter()
        try:
            return what(*args, **kwargs)
        except SlimserveError as exc:
            results[recipe] = replace(results[recipe], error=f"measuring failed: {exc.message}")
            return None
        finally:
            seconds[recipe] += time.perf_counter() - started

    ok = [recipe for recipe, c in built.items() if c.error is None]
    with progress.stage("measure deployment sizes", total=len(ok)) as stage:
        for recipe in ok:
            bundle = attempt(recipe, load_bundle, root / recipe)
            package = None if bundle is None else attempt(recipe, measure_package, bundle, target)
            if package is not None:
                bundles[recipe], packages[recipe] = bundle, package
            stage.advance()
    colds: dict[str, list[ColdStart]] = {recipe: [] for recipe in bundles}
    with progress.stage(f"cold start: {options.runs} interleaved rounds × {len(bundles)} candidates",
                        total=options.runs * len(bundles)) as stage:
        for turn in range(options.runs):
            for recipe in rotated([r for r in bundles if results[r].error is None], turn):
                cold = attempt(recipe, measure_cold_start, bundles[recipe], target, 1)
                if cold is not None:
                    colds[recipe].append(cold)
                stage.advance()
    rounds = max(1, min(LATENCY_ROUNDS, options.latency_runs))
    warm: dict[str, list[latency.Latency]] = {recipe: [] for recipe in bundles}
    with progress.stage(f"warm latency: {rounds} interleaved rounds × {len(bundles)} candidates",
                        total=rounds * len(bundles)) as stage:
        for turn in range(rounds):
            for recipe in rotated([r for r in bundles if results[r].error is None], turn):
                lat = attempt(recipe, latency.measure_latency, root / recipe,
                              runs=max(1, -(-options.latency_runs // rounds)))
                if lat is not None:
                    warm[recipe].append(lat)
                stage.advance()
    for recipe in bundles:
        if results[recipe].error is None:
            results[recipe] = replace(results[recipe], package=packages[recipe],
                                      cold_start=coldstart.merge(colds[recipe]), latency=latency.merge(warm[recipe]),
                                      measure_seconds=seconds[recipe])
    return results


def compare_into(staging: Path, model: str, recipes: Sequence[str], profiles: Sequence[Profile],
                 options: CompareOptions, eval_path: Path | None = None, progress: Progress = NULL_PROGRESS,
                 *, prepared: Any = None, source: Any = None) -> Comparison:
    """Build, measure and write the comparison into `staging` (an empty folder owned by the caller)."""
    from slimserve.optimizer.isa import platform_target
    from slimserve.optimizer.optimize import prepare
    from slimserve.optimizer.sources import resolve_source

    with tempfile.TemporaryDirectory(prefix="slimserve-compare-") as work:
        if prepared is None:
            source = source if source is not None else resolve_source(model)
            prepared = prepare(source, Path(work), eval_path, progress)
        root = staging / CANDIDATES_DIR
        root.mkdir(parents=True, exist_ok=True)
        built = build_candidates(prepared, recipes, root, options.jobs, progress,
                                 cpu=options.cpu or platform_target(options.arch))
    if not any(c.error is None for c in built.values()):
        errors = "; ".join(f"{r}: {c.error}" for r, c in built.items())
        raise SlimserveError(f"every recipe failed on this model ({errors})",
                             hint="rerun with --debug, or try other recipes")
    measured = measure_candidates(built, root, options, progress)
    results = [evaluate_candidate(measured[recipe], profiles, options) for recipe in recipes]
    src = {"kind": prepared.source.kind, "path": prepared.extra.get("source_path"),
           "sha256": prepared.source_sha256, "reference": prepared.exported.reference_kind}
    return write_outputs(staging, assemble(model, src, prepared.eval_source, options, profiles, results))


def write_outputs(folder: Path, comparison: Comparison) -> Comparison:
    """compare.png (first: what it drew goes into the report), then compare.json and compare.md, each
    rendered from the returned report value."""
    from slimserve.report.compare_plot import render_png
    from slimserve.report.comparison import renderer

    comparison = replace(comparison, plot=render_png(comparison, folder / "compare.png"))
    for name, fmt in zip(OUTPUT_FILES, ("json", "markdown"), strict=True):
        with open(folder / name, "w", encoding="utf-8", newline="\n") as fh:
            renderer(fmt)(comparison, fh)
    return comparison


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
