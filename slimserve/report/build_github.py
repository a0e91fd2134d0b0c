"""`build --format github`: GitHub Actions workflow commands for the build.

- each recipe that failed to build: a warning (the others were still compared);
- no winner: one error listing every candidate and the budgets it missed, one per line;
- a winner: the package's check as `check --format github` writes it (an annotation per failing or warning
  rule, a notice or error per platform), then a notice (or an error, when the package fails its check)
  saying what was chosen and where it was written.
Escaping (`%0A` for newlines, `%3A`/`%2C` in titles) is the check renderer's, which cites the runner's spec.
"""

from __future__ import annotations

from typing import TextIO

from slimserve.report import github as check_github
from slimserve.report.build_report import PACKAGE_DIR, BuildResult
from slimserve.report.github import annotation


def render(result: BuildResult, out: TextIO) -> None:
    decision, platform = result.decision, result.platform
    title = f"slimserve build {platform}"
    for c in result.comparison.candidates:
        if c.error is not None:
            out.write(annotation("warning", f"slimserve build: {c.recipe} failed", c.error) + "\n")
    if decision.winner is None:
        misses = [f"{r}: {'; '.join(m)}" for r, m in decision.misses.items() if m]
        out.write(annotation("error", title, "\n".join([f"no candidate meets every budget for {platform}",
                                                         *misses])) + "\n")
        return
    if result.check is not None:
        check_github.render(result.check, out)
    art = result.artifacts or {}
    memory = f", {art['memory_mb']} MB" if "memory_mb" in art else ""
    where = f"{decision.winner} → {PACKAGE_DIR}/ ({result.target}{memory})"
    why = [decision.why] if decision.why else []
    if result.fits:
        out.write(annotation("notice", title, "\n".join([f"chosen {where}; passes its check", *why])) + "\n")
    else:
        failed = [f.reason for v in (result.check.platforms if result.check else ()) for f in v.findings
                  if f.status == "fail"]
        out.write(annotation("error", title, "\n".join([f"chosen {where}; fails its check", *failed, *why])) + "\n")
