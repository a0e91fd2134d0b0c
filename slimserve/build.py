"""The `build` pipeline: compare, choose under budgets, package the winner, check the package.

    compare (slimserve.compare)  →  decide (selection.choose under --min-fidelity, --max-cold-start,
    platform fit)  →  package (packagers: lambda zips or a container image)  →  check the package
    (the sizes of the artifacts actually written, the cold start measured on the same layout)  →  OUT

OUT (written atomically): compare.json/.md/.png and candidates/ (the comparison), package/ (the winner's
artifacts), check.json/.md (the package against the platform, budgets included), build.json and build.md
(the decision, each candidate's misses, and the tables a CI step summary shows).

When nothing meets the budgets, OUT still receives the comparison and the decision, then `BuildFailed`
(a `LimitExceeded`, exit 1) says which budget each candidate missed and by how much.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimserve.atomic import atomic_dir
from slimserve.compare import CompareOptions, Comparison, compare_into, comparison_dict, validate
from slimserve.errors import LimitExceeded, SlimserveError
from slimserve.profiles.schema import Profile
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.report import Report
from slimserve.selection import Budgets, Row, choose, misses

TARGETS = ("lambda", "container")
DEFAULT_PLATFORM = "aws-lambda-zip"
PACKAGE_DIR = "package"


@dataclass(frozen=True)
class BuildOptions:
    platform: str = DEFAULT_PLATFORM
    target: str | None = None  # default: lambda for aws-lambda-zip, container for container platforms
    min_fidelity: float | None = None
    max_cold_start_ms: float | None = None
    base: str | None = None  # container base image (registry ref, oci:PATH or an OCI layout folder)
    compare: CompareOptions = field(default_factory=CompareOptions)

    @property
    def memory_mb(self) -> int | None:
        return self.compare.memory_mb

    @property
    def budgets(self) -> Budgets:
        return Budgets(min_fidelity=self.min_fidelity, max_cold_start_ms=self.max_cold_start_ms,
                       platform=self.platform)


@dataclass(frozen=True)
class Decision:
    """The winner (or None) and, for every measured candidate, the budgets it missed (empty: eligible)."""

    winner: str | None
    misses: Mapping[str, tuple[str, ...]]
    budgets: Budgets
    cold_start_basis: str

    def as_dict(self) -> dict[str, Any]:
        b = self.budgets
        return {"chosen": self.winner,
                "budgets": {"min_fidelity": b.min_fidelity, "max_cold_start_ms": b.max_cold_start_ms,
                            "platform": b.platform},
                "rule": "meets every budget and fits the platform; then smallest deployment (unzipped), "
                        "fastest cold start, most faithful, recipe name",
                "cold_start_basis": self.cold_start_basis,
                "misses": {k: list(v) for k, v in self.misses.items()}}


@dataclass(frozen=True)
class BuildResult:
    out: Path
    comparison: Comparison
    decision: Decision
    check: Report | None = None
    artifacts: Mapping[str, Any] | None = None  # what package/ holds: names, sizes, digests

    @property
    def package_dir(self) -> Path | None:
        return self.out / PACKAGE_DIR if self.artifacts is not None else None

    @property
    def fits(self) -> bool:
        return self.check is not None and self.check.fits


class BuildFailed(LimitExceeded):
    """Nothing met the budgets, or the packaged winner failed its check; OUT was written all the same."""

    def __init__(self, message: str, result: BuildResult, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.result = result


def default_target(profile: Profile) -> str:
    if profile.package == "container":
        return "container"
    if profile.name == "aws-lambda-zip":
        return "lambda"
    raise SlimserveError(f"slimserve cannot package for {profile.name} yet (only aws-lambda-zip and "
                         "container platforms)",
                         hint=f"`slimserve compare MODEL --platform {profile.name}` shows which candidates fit it")


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
                                  f"{'aws-lambda-container' if target == 'container' else 'aws-lambda-zip'}")
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
        rows.append(c.row(cold_start_ms=cold))
    basis = (f"projected onto {options.platform} at {options.memory_mb} MB (estimate)" if options.memory_mb
             else "measured here (median of fresh processes); the packaged memory setting is raised until "
                  "the platform projection meets --max-cold-start")
    return rows, basis


def decide(comparison: Comparison, options: BuildOptions) -> Decision:
    rows, basis = rows_for(comparison, options)
    budgets = options.budgets
    missed = {r.recipe: tuple(misses(r, budgets)) for r in rows}
    for c in comparison.candidates:
        if c.error is not None:
            missed[c.recipe] = (f"failed: {c.error}",)
    pick = choose(rows, budgets)
    return Decision(winner=None if pick is None else pick.recipe, misses=missed, budgets=budgets,
                    cold_start_basis=basis)


def misses_line(decision: Decision) -> str:
    """One line for the error message: each candidate and what it missed."""
    return "; ".join(f"{r}: {', '.join(m)}" for r, m in decision.misses.items() if m)


# --- packaging and the package's check ---------------------------------------------------------------

def _check_options(options: BuildOptions) -> Any:
    from slimserve.check import CheckOptions

    c = options.compare
    return CheckOptions(memory_mb=c.memory_mb, python=c.python, arch=c.arch, runs=c.runs,
                        max_cold_start_ms=options.max_cold_start_ms, min_fidelity=options.min_fidelity)


def check_winner(comparison: Comparison, recipe: str, profile: Profile, options: BuildOptions,
                 folder: Path, package: Any = None, shown: Path | None = None) -> Report:
    """The winner's facts (cold start measured in compare on the same layout) against the platform with
    every budget; `package` (a PackageSize) replaces the measured size with the artifacts written."""
    from slimserve.bundle import load_bundle
    from slimserve.check import check_facts, facts_for, model_summary

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
                   pre_check: dict[str, Any], progress: Progress) -> tuple[dict[str, Any], Any]:
    """Write the winner's artifacts to `out`; returns (their summary, PackageSize of what was written)."""
    from slimserve.bundle import load_bundle
    from slimserve.measure import PackageSize
    from slimserve.packagers.target import Target

    bundle = load_bundle(folder)
    target = Target.parse(options.compare.python, options.compare.arch)
    if target_kind == "lambda":
        from slimserve.packagers.lambda_target import package_lambda

        art = package_lambda(bundle, out, target, options.memory_mb, pre_check, progress)
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
    written = PackageSize(unzipped_bytes=int(facts["new_layers_uncompressed_bytes"]),
                          zipped_bytes=int(facts["new_layers_bytes"]), layers=len(facts["layers"]),
                          image_bytes=int(facts["uncompressed_bytes"]))
    summary = {"kind": "container", "digest": str(image.digest), "image_bytes": int(facts["uncompressed_bytes"]),
               "compressed_bytes": int(facts["compressed_bytes"]), "engine": image.engine,
               "files": ["Dockerfile", "context", "image", "slimserve.json"]}
    return summary, written


# --- the pipeline ------------------------------------------------------------------------------------

def run_build(model: str, out: Path, options: BuildOptions, recipes: Sequence[str], eval_path: Path | None = None,
              progress: Progress = NULL_PROGRESS, *, prepared: Any = None, source: Any = None) -> BuildResult:
    """Compare, choose, package, check; OUT is written atomically. Raises BuildFailed (exit 1) when nothing
    meets the budgets or the package fails its check, after OUT is written."""
    from slimserve.check import validate_options
    from slimserve.optimizer.sources import resolve_source

    (profile,) = validate(recipes, [options.platform], options.compare)
    target_kind = resolve_target(profile, options.target)
    validate_options(_check_options(options), [profile])
    if prepared is None and source is None:
        source = resolve_source(model)
    with atomic_dir(Path(out)) as staging:
        comparison = compare_into(staging, model, recipes, [profile], options.compare, eval_path, progress,
                                  prepared=prepared, source=source)
        decision = decide(comparison, options)
        result = BuildResult(out=Path(out).absolute(), comparison=comparison, decision=decision)
        if decision.winner is not None:
            folder = staging / comparison.candidate(decision.winner).folder
            shown = Path(out).absolute() / comparison.candidate(decision.winner).folder
            from slimserve.report.json_ import report_dict

            pre = check_winner(comparison, decision.winner, profile, options, folder)
            with progress.stage(f"package {decision.winner} ({target_kind})"):
                artifacts, written = package_winner(folder, staging / PACKAGE_DIR, target_kind, profile, options,
                                                    report_dict(pre), progress)
            report = check_winner(comparison, decision.winner, profile, options, folder, written, shown)
            result = dataclasses.replace(result, check=report, artifacts=artifacts)
        write_build(staging, result, target_kind)
    if decision.winner is None:
        raise BuildFailed(f"no candidate meets every budget for {options.platform}: {misses_line(decision)}",
                          result, hint=f"the comparison is in {out}/compare.md; loosen a budget or try other recipes")
    if result.check is not None and not result.check.fits:
        failed = [f.reason for v in result.check.platforms for f in v.findings if f.status == "fail"]
        raise BuildFailed(f"the packaged {decision.winner} does not pass its check: {'; '.join(failed)}", result,
                          hint=f"see {out}/check.md")
    return result


def write_build(folder: Path, result: BuildResult, target_kind: str) -> None:
    from slimserve.report.json_ import report_dict
    from slimserve.report.markdown import render as render_check_md

    data = build_dict(result, target_kind)
    (folder / "build.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if result.check is not None:
        (folder / "check.json").write_text(json.dumps(report_dict(result.check), indent=2, ensure_ascii=False)
                                           + "\n", encoding="utf-8")
        with open(folder / "check.md", "w", encoding="utf-8", newline="\n") as fh:
            render_check_md(result.check, fh)
    (folder / "build.md").write_text(build_markdown(result, target_kind, folder), encoding="utf-8")


def build_dict(result: BuildResult, target_kind: str) -> dict[str, Any]:
    comparison = comparison_dict(result.comparison)
    return {
        "platform": result.decision.budgets.platform,
        "target": target_kind,
        "fits": result.fits,
        **result.decision.as_dict(),
        "package": None if result.artifacts is None else {"folder": PACKAGE_DIR, **result.artifacts},
        "check": "check.json" if result.check is not None else None,
        "comparison": "compare.json",
        "frontier": comparison["frontier"],
        "candidates": {c["recipe"]: {k: c[k] for k in ("bytes", "deploy", "fidelity", "cold_start", "peak_rss_mb",
                                                        "platforms", "error")}
                       for c in comparison["candidates"]},
    }


def build_markdown(result: BuildResult, target_kind: str, folder: Path) -> str:
    d = result.decision
    b = d.budgets
    budgets = ", ".join(x for x in (
        f"fidelity ≥ {b.min_fidelity}" if b.min_fidelity is not None else "",
        f"cold start ≤ {b.max_cold_start_ms:,.0f} ms ({d.cold_start_basis})" if b.max_cold_start_ms is not None else "",
        f"fits {b.platform}") if x)
    if d.winner is None:
        head = f"## slimserve build: ❌ no candidate meets the budgets\n\nBudgets: {budgets}.\n\n"
    elif result.check is not None and not result.check.fits:
        head = (f"## slimserve build: ❌ `{d.winner}` was packaged but fails its check\n\n"
                f"Budgets: {budgets}.\n\n")
    else:
        head = (f"## slimserve build: ✅ `{d.winner}` for {b.platform} ({target_kind})\n\nBudgets: {budgets}. "
                f"Chosen: the candidate meeting every budget with the smallest deployment, then the fastest "
                f"cold start. Artifacts: `{PACKAGE_DIR}/`.\n\n")
    lines = [head.rstrip("\n"), ""]
    if any(d.misses.values()):
        lines += ["| recipe | missed budgets |", "|---|---|"]
        lines += [f"| `{r}` | {'; '.join(m).replace('|', '/')} |" for r, m in d.misses.items() if m]
        lines.append("")
    parts = ["\n".join(lines)]
    if (folder / "check.md").is_file():
        parts.append((folder / "check.md").read_text(encoding="utf-8"))
    parts.append((folder / "compare.md").read_text(encoding="utf-8"))
    return "\n".join(parts)
