"""`build --format json` and build.json: the decision, the package, and each candidate's numbers.

Shape: {"platform", "target", "fits", "chosen", "budgets", "rule", "size_tolerance": {"pct", "mib"}, "why",
"runner_up", "cold_start_basis", "misses": {RECIPE: [..]},
"package": {"folder", "kind", ...} | null, "check": "check.json" | null, "comparison": "compare.json",
"frontier", "candidates": {RECIPE: {"bytes", "deploy", "fidelity", "cold_start", "peak_rss_mb", "platforms",
"error"}}}. The full comparison is in compare.json and the package's check in check.json.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from slimserve.report.build_report import PACKAGE_DIR, RULE, BuildResult, Decision
from slimserve.report.compare_json import candidate_dict

CANDIDATE_KEYS = ("bytes", "deploy", "fidelity", "cold_start", "peak_rss_mb", "platforms", "error")


def decision_dict(decision: Decision) -> dict[str, Any]:
    b = decision.budgets
    return {"chosen": decision.winner,
            "budgets": {"min_fidelity": b.min_fidelity, "max_cold_start_ms": b.max_cold_start_ms,
                        "platform": b.platform},
            "rule": RULE,
            "size_tolerance": {"pct": decision.tolerance.pct, "mib": decision.tolerance.mib},
            "why": decision.why or None,
            "runner_up": decision.runner_up,
            "cold_start_basis": decision.cold_start_basis,
            "misses": {k: list(v) for k, v in decision.misses.items()}}


def build_dict(result: BuildResult) -> dict[str, Any]:
    comparison = result.comparison
    candidates = [candidate_dict(c, comparison.frontier) for c in comparison.candidates]
    return {
        "platform": result.decision.budgets.platform,
        "target": result.target,
        "fits": result.fits,
        **decision_dict(result.decision),
        "package": None if result.artifacts is None else {"folder": PACKAGE_DIR, **result.artifacts},
        "check": "check.json" if result.check is not None else None,
        "comparison": "compare.json",
        "frontier": list(comparison.frontier),
        "candidates": {c["recipe"]: {k: c[k] for k in CANDIDATE_KEYS} for c in candidates},
    }


def render(result: BuildResult, out: TextIO) -> None:
    json.dump(build_dict(result), out, indent=2, ensure_ascii=False)
    out.write("\n")
