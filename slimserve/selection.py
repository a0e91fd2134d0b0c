"""Choosing among candidates: the Pareto frontier and the pick under budgets. Pure functions of rows.

Unlike tuners that stop at the first configuration that passes, the whole frontier is kept: a person
may trade a little fidelity for a much smaller or faster model, and the table should show that.

The pick is not simply the smallest: candidates within a size tolerance of the smallest (10% or 2 MiB)
count as equally small, and among them the most faithful wins (worst sample, then mean). Fidelities within
FIDELITY_TIE of the best are equally faithful: the eval set cannot tell them apart, and there the faster
warm request wins (MiniLM's int8-resident at accuracy level 0 was ahead of int8-weight by 0.0001 on its
worst text and 3x slower on every request). The choice comes with its reason and the runner-up, so a
report can say what was traded for what.
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
    warm_ms: float | None = None  # warm latency of one request at batch 1 (None: not measured)


def _dominates(a: Row, b: Row) -> bool:
    """a is at least as small and at least as faithful (mean) as b, and strictly better in one.

    Two axes only, the two the plot draws: cold start measured here moves by tens of milliseconds from run
    to run, and as a third axis it kept nearly every candidate "on the frontier". Cold start is a budget
    (--max-cold-start) instead, and the table shows it."""
    no_worse = a.fidelity_mean >= b.fidelity_mean and a.deploy_bytes <= b.deploy_bytes
    better = a.fidelity_mean > b.fidelity_mean or a.deploy_bytes < b.deploy_bytes
    return no_worse and better


def pareto_frontier(rows: Sequence[Row]) -> list[str]:
    """Recipes no other candidate dominates on (deployment size, mean fidelity), in the order given."""
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


MIB = 1024**2


@dataclass(frozen=True)
class SizeTolerance:
    """How much larger than the smallest eligible deployment a candidate may be and still count as "as
    small": within `pct` percent or `mib` MiB, whichever is larger. Inside that band fidelity decides,
    since a few hundred KiB on a 60 MiB runtime change nothing a user feels, while the worst-sample
    fidelity can drop from 0.999 to 0.97. Both at 0: strictly the smallest."""

    pct: float = 10.0
    mib: float = 2.0

    def band(self, smallest: int) -> float:
        """Bytes above `smallest` that still count as near-smallest."""
        return max(smallest * self.pct / 100, self.mib * MIB)

    def describe(self) -> str:
        return f"within {self.pct:g}% or {self.mib:g} MiB of the smallest"


@dataclass(frozen=True)
class Choice:
    """The winner, the candidate chosen were the winner absent (the runner-up), and why, in one line."""

    winner: Row
    runner_up: Row | None
    smallest: Row
    near: tuple[str, ...]  # eligible recipes within the tolerance of the smallest (the winner among them)
    why: str  # why the winner, against the runner-up ("worst-sample fidelity 0.9991 vs 0.9680 for +0.3 MiB ...")


# Fidelities this close count as equal (in the task's metric: cosine, F1, agreement...). On MiniLM's 161
# eval texts the int8 recipes that round the same weights the same way differ by 0.0001-0.0003 on their
# worst text, from float summation order; a real loss of fidelity is ten times that (int8-dynamic: 0.968).
FIDELITY_TIE = 0.0005


def _cold(r: Row) -> float:
    return r.cold_start_ms if r.cold_start_ms is not None else float("inf")


def _warm(r: Row) -> float:
    return r.warm_ms if r.warm_ms is not None else float("inf")


def tied(a: Row, b: Row) -> bool:
    """Equally faithful: worst sample and mean both within FIDELITY_TIE."""
    return abs(a.fidelity_min - b.fidelity_min) <= FIDELITY_TIE and abs(a.fidelity_mean - b.fidelity_mean) <= FIDELITY_TIE


def _pick(eligible: Sequence[Row], tolerance: SizeTolerance) -> tuple[Row, Row, list[Row]]:
    """(winner, smallest, near-smallest rows): most faithful near the smallest, by worst sample then mean
    (the worst sample is what a user meets on an unlucky input; two means can hide a 0.97 outlier); among
    those tied with the most faithful, the fastest warm request, then smaller, faster to start, name."""
    smallest = min(eligible, key=lambda r: (r.deploy_bytes, -r.fidelity_min, -r.fidelity_mean, _cold(r), r.recipe))
    band = tolerance.band(smallest.deploy_bytes)
    near = [r for r in eligible if r.deploy_bytes - smallest.deploy_bytes <= band]
    best = min(near, key=lambda r: (-r.fidelity_min, -r.fidelity_mean, r.deploy_bytes, _cold(r), r.recipe))
    equal = [r for r in near if tied(r, best)]
    winner = min(equal, key=lambda r: (_warm(r), r.deploy_bytes, _cold(r), -r.fidelity_min, -r.fidelity_mean, r.recipe))
    return winner, smallest, near


def _for_size(a: Row, b: Row) -> str:
    """What a's deployment costs against b's: 'for +0.3 MiB', 'and 8.0 MiB smaller', 'at the same size'."""
    delta = a.deploy_bytes - b.deploy_bytes
    if delta == 0:
        return "at the same size"
    size = (f"{abs(delta):,} bytes" if abs(delta) < 1024 else f"{abs(delta) / 1024:,.1f} KiB"
            if abs(delta) < 0.1 * MIB else f"{abs(delta) / MIB:,.1f} MiB")
    return f"for +{size}" if delta > 0 else f"and {size} smaller"


def _fidelity_vs(a: Row, b: Row) -> str:
    """a's fidelity against b's, on the statistic that separates them (worst sample first)."""
    if a.fidelity_min != b.fidelity_min:
        return f"worst-sample fidelity {a.fidelity_min:.4f} vs {b.fidelity_min:.4f}"
    if a.fidelity_mean != b.fidelity_mean:
        return f"mean fidelity {a.fidelity_mean:.4f} vs {b.fidelity_mean:.4f}"
    return f"the same fidelity ({a.fidelity_min:.4f} worst sample)"


def _tie_vs(a: Row, b: Row) -> str:
    """Why a beat b when their fidelities tie: the warm request (or what broke the tie after it)."""
    same = (f"fidelity tied within {FIDELITY_TIE:g} (worst sample {a.fidelity_min:.4f} vs {b.fidelity_min:.4f}, "
            f"mean {a.fidelity_mean:.4f} vs {b.fidelity_mean:.4f})")
    if a.warm_ms is not None and b.warm_ms is not None and f"{a.warm_ms:.1f}" != f"{b.warm_ms:.1f}":
        return f"warm latency {a.warm_ms:.1f} vs {b.warm_ms:.1f} ms at batch 1, {same},"
    return f"{same},"


def _why(winner: Row, runner_up: Row | None, smallest: Row, near: Sequence[Row], tolerance: SizeTolerance) -> str:
    within = tolerance.describe()
    if runner_up is None:
        return "the only candidate that meets every budget"
    if any(r is runner_up for r in near) and tied(winner, runner_up):
        return (f"{_tie_vs(winner, runner_up)} {_for_size(winner, runner_up)} ({within}, {smallest.recipe}); "
                f"runner-up {runner_up.recipe}")
    if winner is not smallest:
        return (f"{_fidelity_vs(winner, runner_up)} {_for_size(winner, runner_up)} "
                f"({within}, {smallest.recipe}); runner-up {runner_up.recipe}")
    head = "the smallest deployment that meets every budget"
    if len(near) > 1:
        head += f", and the most faithful {within}"
    place = "" if any(r is runner_up for r in near) else f", outside the size tolerance ({tolerance.pct:g}% or {tolerance.mib:g} MiB)"
    return (f"{head}; runner-up {runner_up.recipe}: {_fidelity_vs(runner_up, winner)} "
            f"{_for_size(runner_up, winner)}{place}")


def explain_choice(rows: Sequence[Row], budgets: Budgets, tolerance: SizeTolerance | None = None) -> Choice | None:
    """Among rows that meet every budget (and fit the platform): the most faithful of those whose deployment
    is within the tolerance of the smallest; the runner-up is what would win without the winner."""
    tolerance = tolerance if tolerance is not None else SizeTolerance()
    eligible = [r for r in rows if not misses(r, budgets)]
    if not eligible:
        return None
    winner, smallest, near = _pick(eligible, tolerance)
    rest = [r for r in eligible if r is not winner]
    runner_up = _pick(rest, tolerance)[0] if rest else None
    return Choice(winner=winner, runner_up=runner_up, smallest=smallest, near=tuple(r.recipe for r in near),
                  why=_why(winner, runner_up, smallest, near, tolerance))


def choose(rows: Sequence[Row], budgets: Budgets, tolerance: SizeTolerance | None = None) -> Row | None:
    """The winner of `explain_choice`, or None when no row meets every budget."""
    choice = explain_choice(rows, budgets, tolerance)
    return None if choice is None else choice.winner
