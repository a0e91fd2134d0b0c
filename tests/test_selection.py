"""Frontier and choice under budgets, on hand-made rows whose right answers are known."""

from __future__ import annotations

from slimserve.selection import Budgets, Row, choose, misses, pareto_frontier

MB = 1_000_000


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
