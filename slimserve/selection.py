"""Choosing among candidates: the Pareto frontier and the pick under budgets. Pure functions of rows.

Unlike tuners that stop at the first configuration that passes, the whole frontier is kept: a person
may trade a little fidelity for a much smaller or faster model, and the table should show that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    """One candidate's numbers as selection sees them (bigger fidelity is better, the rest smaller)."""

    recipe: str
    fidelity_mean: float
    fidelity_min: float
    model_bytes: int
    deploy_bytes: int
    cold_start_ms: float | None
    fits: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def _dominates(a: Row, b: Row) -> bool:
    """a is at least as good as b on fidelity, size and cold start, and strictly better on one."""
    a_cold = a.cold_start_ms if a.cold_start_ms is not None else float("inf")
    b_cold = b.cold_start_ms if b.cold_start_ms is not None else float("inf")
    no_worse = a.fidelity_mean >= b.fidelity_mean and a.deploy_bytes <= b.deploy_bytes and a_cold <= b_cold
    better = a.fidelity_mean > b.fidelity_mean or a.deploy_bytes < b.deploy_bytes or a_cold < b_cold
    return no_worse and better


def pareto_frontier(rows: Sequence[Row]) -> list[str]:
    """Recipes no other candidate dominates: the smallest and fastest for each fidelity level."""
    return [r.recipe for r in rows if not any(_dominates(o, r) for o in rows if o is not r)]


@dataclass(frozen=True)
class Budgets:
    min_fidelity: float | None = None
    max_cold_start_ms: float | None = None
    platform: str | None = None


def misses(row: Row, budgets: Budgets) -> list[str]:
    """Each budget the row misses, with by how much, in words a pipeline log can show."""
    out = []
    if budgets.min_fidelity is not None and row.fidelity_mean < budgets.min_fidelity:
        digits = 4  # more digits only when 4 would hide the shortfall (0.99999 vs 0.99998)
        while digits < 8 and round(row.fidelity_mean, digits) >= budgets.min_fidelity:
            digits += 1
        short = budgets.min_fidelity - row.fidelity_mean
        out.append(f"fidelity {row.fidelity_mean:.{digits}f} < {budgets.min_fidelity} (short by {short:.{digits}f})")
    if budgets.max_cold_start_ms is not None:
        if row.cold_start_ms is None:
            out.append("cold start not measured")
        elif row.cold_start_ms > budgets.max_cold_start_ms:
            over = row.cold_start_ms - budgets.max_cold_start_ms
            out.append(f"cold start {row.cold_start_ms:.0f} ms > {budgets.max_cold_start_ms:.0f} ms (over by {over:.0f} ms)")
    if budgets.platform is not None and not row.fits.get(budgets.platform, False):
        reason = row.reasons.get(budgets.platform, "not checked")
        out.append(f"does not fit {budgets.platform}: {reason}")
    return out


def choose(rows: Sequence[Row], budgets: Budgets) -> Row | None:
    """Among rows that meet every budget: smallest deployment, then fastest cold start, then most faithful."""
    eligible = [r for r in rows if not misses(r, budgets)]
    if not eligible:
        return None
    return min(eligible, key=lambda r: (r.deploy_bytes, r.cold_start_ms if r.cold_start_ms is not None else float("inf"),
                                        -r.fidelity_mean, r.recipe))
