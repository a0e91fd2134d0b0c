"""Frontier and choice under budgets, on hand-made rows whose right answers are known."""

from __future__ import annotations

from dataclasses import replace

import pytest

from slimserve.selection import Budgets, Row, SizeTolerance, choose, explain_choice, misses, pareto_frontier

MB = 1_000_000
MIB = 1024**2


def row(recipe: str, fid: float, size_mb: float, cold: float | None, fits: bool = True) -> Row:
    return Row(recipe=recipe, fidelity_mean=fid, fidelity_min=fid - 0.01, model_bytes=int(size_mb * MB),
               deploy_bytes=int((size_mb + 40) * MB), cold_start_ms=cold,
               fits={"aws-lambda-zip": fits}, reasons={} if fits else {"aws-lambda-zip": "unzipped 301 MB > 250 MiB"})


ROWS = [
    row("fp32", 1.0, 90, 900, fits=False),
    row("fp16", 0.99999, 45, 800),
    row("int8", 0.9995, 23, 600),
    row("int8-dynamic", 0.993, 23, 650),   # dominated by int8: same size, less faithful, slower
    row("int4-weight", 0.985, 15, 550),
]


def test_frontier_keeps_every_tradeoff_and_drops_dominated_rows() -> None:
    assert pareto_frontier(ROWS) == ["fp32", "fp16", "int8", "int4-weight"]


def test_choice_prefers_the_smallest_deployment_that_meets_budgets() -> None:
    assert choose(ROWS, Budgets(platform="aws-lambda-zip")).recipe == "int4-weight"  # type: ignore[union-attr]
    assert choose(ROWS, Budgets(min_fidelity=0.99, platform="aws-lambda-zip")).recipe == "int8"  # type: ignore[union-attr]
    assert choose(ROWS, Budgets(min_fidelity=0.9999, platform="aws-lambda-zip")).recipe == "fp16"  # type: ignore[union-attr]


def test_cold_start_budget_and_tie_break() -> None:
    tied = [row("a", 0.999, 20, 700), row("b", 0.999, 20, 500)]
    assert choose(tied, Budgets()).recipe == "b"  # type: ignore[union-attr]
    assert choose(tied, Budgets(max_cold_start_ms=600)).recipe == "b"  # type: ignore[union-attr]
    assert choose(tied, Budgets(max_cold_start_ms=400)) is None


def test_misses_say_which_budget_and_by_how_much() -> None:
    result = misses(ROWS[0], Budgets(min_fidelity=0.99, max_cold_start_ms=500, platform="aws-lambda-zip"))
    assert result[0].startswith("cold start 900 ms > 500 ms (over by 400 ms)")
    assert "does not fit aws-lambda-zip: unzipped 301 MB > 250 MiB" in result[1]
    assert misses(ROWS[4], Budgets(min_fidelity=0.99)) == ["fidelity 0.9850 < 0.99 (short by 0.0050)"]


# --- the size tolerance: near-smallest candidates are ranked by fidelity ---------------------------------

def near(recipe: str, mean: float, worst: float, deploy_mib: float, cold: float = 500.0) -> Row:
    return Row(recipe=recipe, fidelity_mean=mean, fidelity_min=worst, model_bytes=int((deploy_mib - 60) * MIB),
               deploy_bytes=int(deploy_mib * MIB), cold_start_ms=cold, fits={"aws-lambda-zip": True})


# The issue's case: int8-dynamic saves 0.3 MiB on an 83 MiB deployment but its worst text is at 0.968.
ISSUE = [near("fp32", 1.0, 1.0, 146.0), near("int8", 0.9995, 0.9991, 83.3),
         near("int8-dynamic", 0.995, 0.968, 83.0, cold=400.0), near("int4-weight", 0.99, 0.95, 90.0)]


def test_within_the_tolerance_the_most_faithful_wins_and_says_what_it_traded() -> None:
    choice = explain_choice(ISSUE, Budgets(platform="aws-lambda-zip"))
    assert choice is not None and choice.winner.recipe == "int8"
    assert choice.runner_up is not None and choice.runner_up.recipe == "int8-dynamic"
    assert choice.smallest.recipe == "int8-dynamic"
    assert set(choice.near) == {"int8", "int8-dynamic", "int4-weight"}  # 90 MiB is within 10% of 83 MiB
    assert choice.why == ("worst-sample fidelity 0.9991 vs 0.9680 for +0.3 MiB (within 10% or 2 MiB of the "
                          "smallest, int8-dynamic); runner-up int8-dynamic")


def test_zero_tolerance_is_strictly_the_smallest() -> None:
    choice = explain_choice(ISSUE, Budgets(), SizeTolerance(0, 0))
    assert choice is not None and choice.winner.recipe == "int8-dynamic"
    assert choice.runner_up is not None and choice.runner_up.recipe == "int8"
    assert choice.why == ("the smallest deployment that meets every budget; runner-up int8: worst-sample fidelity "
                          "0.9991 vs 0.9680 for +0.3 MiB, outside the size tolerance (0% or 0 MiB)")


@pytest.mark.parametrize(("pct", "mib", "winner"), [
    (10, 2, "int8"),            # 0.3 MiB over 83 MiB: within both
    (0, 0.5, "int8"),           # the MiB part alone admits it
    (0.5, 0, "int8"),           # 0.5% of 83 MiB = 0.42 MiB: the percent part alone admits it
    (0.3, 0.25, "int8-dynamic"),  # 0.25 MiB and 0.3% (0.249 MiB) are both short of 0.3 MiB
])
def test_the_larger_of_percent_and_mib_sets_the_band(pct: float, mib: float, winner: str) -> None:
    assert choose(ISSUE, Budgets(), SizeTolerance(pct, mib)).recipe == winner  # type: ignore[union-attr]


def test_outside_the_band_size_still_wins_and_the_runner_up_shows_the_cost() -> None:
    rows = [near("int4-weight", 0.985, 0.95, 75.0), near("int8", 0.9995, 0.9991, 83.0)]  # 8 MiB > 7.5 MiB
    choice = explain_choice(rows, Budgets())
    assert choice is not None and choice.winner.recipe == "int4-weight"
    assert choice.why == ("the smallest deployment that meets every budget; runner-up int8: worst-sample fidelity "
                          "0.9991 vs 0.9500 for +8.0 MiB, outside the size tolerance (10% or 2 MiB)")
    assert explain_choice(rows, Budgets(), SizeTolerance(11, 0)).winner.recipe == "int8"  # type: ignore[union-attr]


def test_worst_sample_first_then_mean_then_size() -> None:
    same_worst = [near("a", 0.990, 0.98, 80.0), near("b", 0.995, 0.98, 80.5)]
    choice = explain_choice(same_worst, Budgets())
    assert choice is not None and choice.winner.recipe == "b"
    assert choice.why.startswith("mean fidelity 0.9950 vs 0.9900 for +0.5 MiB")
    tiny = [Row("a", 0.9999, 0.9994, 2800, 78_000_000, 150.0), Row("b", 1.0, 1.0, 3300, 78_000_500, 150.0)]
    assert explain_choice(tiny, Budgets()).why.startswith(  # type: ignore[union-attr]
        "worst-sample fidelity 1.0000 vs 0.9994 for +500 bytes")
    kib = [Row("a", 0.99, 0.98, 0, 78_000_000, 1.0), Row("b", 0.999, 0.99, 0, 78_002_560, 1.0)]
    assert "for +2.5 KiB" in explain_choice(kib, Budgets()).why  # type: ignore[union-attr]
    identical = [near("a", 0.99, 0.98, 81.0), near("b", 0.99, 0.98, 80.0)]
    assert choose(identical, Budgets()).recipe == "b"  # type: ignore[union-attr]


def test_budgets_come_before_the_tolerance() -> None:
    # The faithful one misses the cold start budget: the tolerance never brings back a row that misses one.
    rows = [near("fast", 0.995, 0.97, 80.0, cold=300.0), near("slow", 0.9999, 0.999, 80.2, cold=900.0)]
    choice = explain_choice(rows, Budgets(max_cold_start_ms=500))
    assert choice is not None and choice.winner.recipe == "fast" and choice.runner_up is None
    assert choice.why == "the only candidate that meets every budget"
    assert explain_choice(rows, Budgets(max_cold_start_ms=100)) is None


def test_frontier_is_size_against_fidelity_and_ignores_cold_start_noise() -> None:
    # Five candidates whose cold starts differ by noise: the earlier 3-axis rule kept all five.
    rows = [near("fp32", 1.0, 1.0, 146.0, cold=900), near("fp16", 0.99999, 0.9999, 104.0, cold=950),
            near("int8", 0.9995, 0.9991, 83.3, cold=880), near("int8-dynamic", 0.995, 0.968, 83.0, cold=870),
            near("int4-weight", 0.99, 0.95, 90.0, cold=860)]
    # int4-weight is larger than int8 and less faithful: dominated whatever its cold start.
    assert pareto_frontier(rows) == ["fp32", "fp16", "int8", "int8-dynamic"]
    twins = [near("a", 0.99, 0.98, 80.0), near("b", 0.99, 0.98, 80.0)]
    assert pareto_frontier(twins) == ["a", "b"]  # equal on both axes: neither dominates


def test_fidelities_within_the_tie_are_equal_and_the_faster_warm_request_wins() -> None:
    # MiniLM on an AVX2 target: int8-resident (level 0) 0.0001 ahead on its worst text, 3x slower per request
    rows = [near("int8-weight", 0.9998, 0.9991, 83.3), near("int8-resident", 0.9998, 0.9992, 84.0),
            near("int8-dynamic", 0.9950, 0.9680, 83.0)]
    rows = [replace(rows[0], warm_ms=6.2), replace(rows[1], warm_ms=18.9), replace(rows[2], warm_ms=2.1)]
    choice = explain_choice(rows, Budgets())
    assert choice is not None and choice.winner.recipe == "int8-weight"
    assert choice.runner_up is not None and choice.runner_up.recipe == "int8-resident"
    assert choice.why == ("warm latency 6.2 vs 18.9 ms at batch 1, fidelity tied within 0.0005 (worst sample "
                          "0.9991 vs 0.9992, mean 0.9998 vs 0.9998), and 0.7 MiB smaller (within 10% or 2 MiB of "
                          "the smallest, int8-dynamic); runner-up int8-resident")
    # a real difference is never a tie: 0.0006 on the worst sample beats any latency
    apart = [replace(rows[0], fidelity_min=0.9986), rows[1]]
    assert choose(apart, Budgets()).recipe == "int8-resident"  # type: ignore[union-attr]
    # without latencies the tie goes to the smaller deployment
    unmeasured = [replace(r, warm_ms=None) for r in rows[:2]]
    assert choose(unmeasured, Budgets()).recipe == "int8-weight"  # type: ignore[union-attr]
