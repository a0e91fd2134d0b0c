"""The `build` pipeline: compare, choose under budgets, package the winner, check the package.

    compare (slimserve.pipeline.compare)  →  decide (selection.explain_choice under --min-fidelity,
    --max-cold-start, platform fit; the most faithful within --size-tolerance-* of the smallest)
    →  package (packagers: lambda zips or a container image)  →  check the package
    (the sizes of the artifacts actually written, the cold start measured on the same layout)  →  OUT

OUT (written atomically): compare.json/.md/.png and candidates/ (the comparison), package/ (the winner's
artifacts), check.json/.md (the package against the platform, budgets included), build.json and build.md
(the decision, each candidate's misses, and the tables a CI step summary shows). Each .json and .md is rendered
from the one report value, `BuildResult` (slimserve.report.build_report), by the same renderers the CLI's
`--format` picks; packaging gets typed values from the decision and the check, never a rendered report.

When nothing meets the budgets, OUT still receives the comparison and the decision, then `BuildFailed`
(a `LimitExceeded`, exit 1) says which budget each candidate missed and by how much.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from slimserve.atomic import atomic_dir
from slimserve.errors import LimitExceeded, SlimserveError
from slimserve.measure import PackageSize
from slimserve.pipeline.check import CheckOptions
from slimserve.pipeline.compare import CompareOptions, Comparison, candidate_row, compare_into, validate
from slimserve.profiles.loader import packaged_platforms
from slimserve.profiles.schema import Profile
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.report import Report
from slimserve.report.build_report import PACKAGE_DIR, BuildResult, Decision
from slimserve.selection import Budgets, Row, SizeTolerance, explain_choice, misses

__all__ = ["PACKAGE_DIR", "BuildResult", "Decision"]

TARGETS = ("lambda", "container")
DEFAULT_PLATFORM = "aws-lambda-zip"


@dataclass(frozen=True)
class BuildOptions:
    platform: str = DEFAULT_PLATFORM
    target: str | None = None  # default: lambda for aws-lambda-zip, container for container platforms
    min_fidelity: float | None = None
    max_cold_start_ms: float | None = None
    size_tolerance: SizeTolerance = field(default_factory=SizeTolerance)  # sizes this close count as equal
    base: str | None = None  # container base image (registry ref, oci:PATH or an OCI layout folder)
    compare: CompareOptions = field(default_factory=CompareOptions)

    @property
    def memory_mb(self) -> int | None:
        return self.compare.memory_mb

    @property
    def budgets(self) -> Budgets:
        return Budgets(min_fidelity=self.min_fidelity, max_cold_start_ms=self.max_cold_start_ms,
                       platform=self.platform)


class BuildFailed(LimitExceeded):
    """Nothing met the budgets, or the packaged winner failed its check; OUT was written all the same."""

    def __init__(self, message: str, result: BuildResult, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


def default_target(profile: Profile) -> str:
    """The artifact the platform's profile declares in its [packager] table (platform knowledge is data)."""
    if profile.packager is None:
        raise SlimserveError(f"slimserve cannot package for {profile.name} yet (it packages for "
                             f"{', '.join(packaged_platforms())})",
                             hint=f"`slimserve compare MODEL --platform {profile.name}` shows which candidates fit it")
    return "container" if profile.packager.artifact == "container" else "lambda"


def resolve_target(profile: Profile, target: str | None) -> str:
    """`--target` must suit the platform: Lambda zips for aws-lambda-zip, an image for container platforms."""
    natural = default_target(profile)
    if target is None:
        return natural
    if target not in TARGETS:
        raise SlimserveError(f"unknown --target {target!r}", hint="choose lambda or container")
    if target != natural:
        raise SlimserveError(f"--target {target} does not deploy to {profile.name} (it takes a "
                             f"{'container image' if natural == 'container' else '.zip package'})",
                             hint=f"use --target {natural}, or --platform "
                                  f"{' / '.join(packaged_platforms('container' if target == 'container' else 'zip'))}")
    return target


# --- the decision (pure) -----------------------------------------------------------------------------

def rows_for(comparison: Comparison, options: BuildOptions) -> tuple[list[Row], str]:
    """Selection rows for the build's platform. Cold start is the one measured here, unless --memory fixes
    the setting: then it is the platform's projection at that memory (an estimate, as `check` shows it)."""
    rows = []
    for c in comparison.measured:
        cold = None
        if options.memory_mb is not None:
            verdict = c.verdict(options.platform)
            cold = verdict.projection.total_ms if verdict is not None and verdict.projection else None
        rows.append(candidate_row(c, cold_start_ms=cold))
    basis = (f"projected onto {options.platform} at {options.memory_mb} MB (estimate)" if options.memory_mb
             else "measured here (median of fresh processes); the packaged memory setting is raised until "
                  "the platform projection meets --max-cold-start")
    return rows, basis


def with_task_floor(options: BuildOptions, comparison: Comparison) -> BuildOptions:
    """Without --min-fidelity, the budget is the default floor of the metric the candidates were judged
    by (0.99 mean cosine; 0.95 entity F1, exact match, top-1 agreement, Spearman: slimserve.tasks)."""
    if options.min_fidelity is not None:
        return options
    from dataclasses import replace

    from slimserve.tasks import default_min_fidelity

    metric = next((c.fidelity.metric for c in comparison.candidates if c.fidelity is not None), None)
    return replace(options, min_fidelity=default_min_fidelity(metric))


def decide(comparison: Comparison, options: BuildOptions) -> Decision:
    rows, basis = rows_for(comparison, options)
    budgets = options.budgets
    missed = {r.recipe: tuple(misses(r, budgets)) for r in rows}
    for c in comparison.candidates:
        if c.error is not None:
            missed[c.recipe] = (f"failed: {c.error}",)
    choice = explain_choice(rows, budgets, options.size_tolerance)
    if choice is None:
        return Decision(winner=None, misses=missed, budgets=budgets, cold_start_basis=basis,
                        tolerance=options.size_tolerance)
    return Decision(winner=choice.winner.recipe, misses=missed, budgets=budgets, cold_start_basis=basis,
                    tolerance=options.size_tolerance, why=choice.why,
                    runner_up=choice.runner_up.recipe if choice.runner_up is not None else None)


def misses_line(decision: Decision) -> str:
    """One line for the error message: each candidate and what it missed."""
    return "; ".join(f"{r}: {', '.join(m)}" for r, m in decision.misses.items() if m)


# --- packaging and the package's check ---------------------------------------------------------------

def _check_options(options: BuildOptions) -> CheckOptions:
    c = options.compare
    return CheckOptions(memory_mb=c.memory_mb, python=c.python, arch=c.arch, numpy=c.numpy, runs=c.runs,
                        max_cold_start_ms=options.max_cold_start_ms, min_fidelity=options.min_fidelity)


def check_winner(comparison: Comparison, recipe: str, profile: Profile, options: BuildOptions,
                 folder: Path, package: PackageSize | None = None, shown: Path | None = None) -> Report:
    """The winner's facts (cold start measured in compare on the same layout) against the platform with
    every budget; `package` (a PackageSize) replaces the measured size with the artifacts written."""
    from slimserve.bundle import load_bundle
    from slimserve.pipeline.check import check_facts, facts_for, model_summary

    c = comparison.candidate(recipe)
    assert c.package is not None and c.cold_start is not None
    bundle = load_bundle(folder)
    check_options = _check_options(options)
    facts = facts_for(bundle, check_options, package or c.package, c.cold_start)
    summary = model_summary(bundle)
    if shown is not None:  # report the folder where it will live, not the staging copy being written
        summary["path"] = str(shown / bundle.model_path.relative_to(folder))
    return check_facts(str(shown or folder), [profile], facts, check_options, summary)


def package_winner(folder: Path, out: Path, target_kind: str, profile: Profile, options: BuildOptions,
                   pre_check: Report, progress: Progress) -> tuple[dict[str, Any], PackageSize]:
    """Write the winner's artifacts to `out`; returns (their summary, PackageSize of what was written).
    The memory setting and timeout are decided here, from `pre_check`'s verdict, and handed to the packager."""
    from slimserve.bundle import load_bundle
    from slimserve.packagers.target import Target

    bundle = load_bundle(folder)
    target = Target.parse(options.compare.python, options.compare.arch, options.compare.numpy)
    if target_kind == "lambda":
        from slimserve.packagers.lambda_target import choose_memory, choose_timeout, package_lambda

        verdict = pre_check.verdict(profile.name)
        art = package_lambda(bundle, out, target, choose_memory(options.memory_mb, verdict), choose_timeout(verdict),
                             pre_check, progress)
        written = PackageSize(unzipped_bytes=art.layer.unzipped_bytes + art.function.unzipped_bytes,
                              zipped_bytes=art.layer.bytes + art.function.bytes,
                              parts={"layer.zip": art.layer.bytes, "function.zip": art.function.bytes},
                              unzipped_parts={"layer.zip": art.layer.unzipped_bytes,
                                              "function.zip": art.function.unzipped_bytes}, layers=1)
        summary = {"kind": "lambda", "memory_mb": art.memory_mb, "handler": "lambda_handler.handler",
                   **{z.path.name: z.as_manifest() for z in (art.layer, art.function)},
                   "files": ["layer.zip", "function.zip", "template.yaml", "slimserve.json", "DEPLOY.md"]}
        return summary, written
    from slimserve.packagers.container import package_container

    image = package_container(bundle, out, target, base_ref=options.base, platform=profile.name, progress=progress)
    facts = image.facts
    written = PackageSize(unzipped_bytes=facts.new_layers_uncompressed_bytes, zipped_bytes=facts.new_layers_bytes,
                          layers=len(facts.layers), image_bytes=facts.uncompressed_bytes)
    summary = {"kind": "container", "digest": str(image.digest), "image_bytes": facts.uncompressed_bytes,
               "compressed_bytes": facts.compressed_bytes, "engine": image.engine,
               "files": ["Dockerfile", "context", "image", "slimserve.json"]}
    return summary, written


# --- the pipeline ------------------------------------------------------------------------------------

def run_build(model: str, out: Path, options: BuildOptions, recipes: Sequence[str], eval_path: Path | None = None,
              progress: Progress = NULL_PROGRESS, *, prepared: Any = None, source: Any = None) -> BuildResult:
    """Compare, choose, package, check; OUT is written atomically. Raises BuildFailed (exit 1) when nothing
    meets the budgets or the package fails its check, after OUT is written."""
    from slimserve.optimizer.sources import resolve_source
    from slimserve.pipeline.check import validate_options

    (profile,) = validate(recipes, [options.platform], options.compare)
    target_kind = resolve_target(profile, options.target)
    validate_options(_check_options(options), [profile])
    if prepared is None and source is None:
        source = resolve_source(model)
    with atomic_dir(Path(out)) as staging:
        comparison = compare_into(staging, model, recipes, [profile], options.compare, eval_path, progress,
                                  prepared=prepared, source=source)
        options = with_task_floor(options, comparison)
        decision = decide(comparison, options)
        result = BuildResult(out=Path(out).absolute(), comparison=comparison, decision=decision, target=target_kind)
        if decision.winner is not None:
            folder = staging / comparison.candidate(decision.winner).folder
            shown = Path(out).absolute() / comparison.candidate(decision.winner).folder
            pre = check_winner(comparison, decision.winner, profile, options, folder)
            with progress.stage(f"package {decision.winner} ({target_kind})"):
                artifacts, written = package_winner(folder, staging / PACKAGE_DIR, target_kind, profile, options,
                                                    pre, progress)
            report = check_winner(comparison, decision.winner, profile, options, folder, written, shown)
            result = dataclasses.replace(result, check=report, artifacts=artifacts)
        write_build(staging, result)
    if decision.winner is None:
        raise BuildFailed(f"no candidate meets every budget for {options.platform}: {misses_line(decision)}",
                          result, hint=f"the comparison is in {out}/compare.md; loosen a budget or try other recipes")
    if result.check is not None and not result.check.fits:
        failed = [f.reason for v in result.check.platforms for f in v.findings if f.status == "fail"]
        raise BuildFailed(f"the packaged {decision.winner} does not pass its check: {'; '.join(failed)}", result,
                          hint=f"see {out}/check.md")
    return result


def write_build(folder: Path, result: BuildResult) -> None:
    """build.json and build.md, and the package's check.json and check.md, each from its renderer."""
    from slimserve.report import renderer as check_renderer
    from slimserve.report.build_report import renderer

    def write(name: str, render: Callable[[TextIO], None]) -> None:
        with open(folder / name, "w", encoding="utf-8", newline="\n") as fh:
            render(fh)

    write("build.json", lambda fh: renderer("json")(result, fh))
    if result.check is not None:
        check = result.check
        write("check.json", lambda fh: check_renderer("json")(check, fh))
        write("check.md", lambda fh: check_renderer("markdown")(check, fh))
    write("build.md", lambda fh: renderer("markdown")(result, fh))
