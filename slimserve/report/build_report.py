"""The one report value `slimserve build` produces, and the table of its renderers.

`BuildResult` holds the comparison, the decision (winner and each candidate's missed budgets), the check of
the packaged winner and what package/ holds. The pipeline (`slimserve.pipeline.build`) decides and packages; every
output format is its own module with the same `render(result, out)` signature, chosen from `RENDERERS`.
Renderers read `fits` and the decision; they never decide the exit code (the pipeline raises `BuildFailed`,
the CLI maps it to 1). This module imports only report values and selection's budgets, never the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from slimserve.report import Report, load_renderer
from slimserve.report.comparison import Comparison
from slimserve.selection import Budgets, SizeTolerance

PACKAGE_DIR = "package"
RULE = ("meets every budget and fits the platform; among those whose deployment (unzipped) is within the size "
        "tolerance of the smallest, the most faithful (worst sample, then mean); then smaller, faster cold start, "
        "recipe name")

# format name -> module under slimserve.report (imported when used, so rich loads only for text output)
RENDERERS: dict[str, str] = {
    "text": "build_text",
    "json": "build_json",
    "markdown": "build_markdown",
    "junit": "build_junit",
    "github": "build_github",
}
FORMATS = tuple(RENDERERS)


@dataclass(frozen=True)
class Decision:
    """The winner (or None) and, for every candidate in the order given, the budgets it missed (empty:
    eligible; a recipe that failed to build misses with its error); why the winner, and the runner-up."""

    winner: str | None
    misses: Mapping[str, tuple[str, ...]]
    budgets: Budgets
    cold_start_basis: str
    tolerance: SizeTolerance = field(default_factory=SizeTolerance)
    why: str = ""  # one line: what was chosen over what, for how much (selection.Choice.why)
    runner_up: str | None = None  # what would have been chosen without the winner


@dataclass(frozen=True)
class BuildResult:
    out: Path
    comparison: Comparison
    decision: Decision
    target: str  # the artifact kind: lambda (layer + function zips) or container (OCI image)
    check: Report | None = None
    artifacts: Mapping[str, Any] | None = None  # what package/ holds: names, sizes, digests

    @property
    def package_dir(self) -> Path | None:
        return self.out / PACKAGE_DIR if self.artifacts is not None else None

    @property
    def fits(self) -> bool:
        return self.check is not None and self.check.fits

    @property
    def platform(self) -> str:
        return self.decision.budgets.platform or ""


def renderer(fmt: str) -> Callable[[BuildResult, TextIO], None]:
    render: Callable[[BuildResult, TextIO], None] = load_renderer(RENDERERS, fmt)
    return render
