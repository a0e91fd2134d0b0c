"""compare.png: the frontier it marks is the real one, the fidelity budget is drawn, and the platform panel
shows the cold start `check` projects and the memory it recommends. Hand-made measurements go through the
real profile rules and the real matplotlib renderer; the frontier oracle here is a brute-force pairwise
check written independently of slimserve.selection."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slimserve.pipeline.check import resolve_profiles
from slimserve.pipeline.compare import CandidateResult, CompareOptions, assemble, evaluate_candidate
from slimserve.report.compare_plot import render_png
from tests.test_build import candidate

PLATFORMS = ["aws-lambda-zip", "aws-lambda-container"]


def five(noise: bool = True) -> list[CandidateResult]:
    """The default five recipes, cold starts within measurement noise of each other (the issue's case)."""
    return [candidate("fp32", 1.0, 86, 900), candidate("fp16", 0.99999, 43, 950 if noise else 800),
            candidate("int8", 0.9995, 22.3, 880), candidate("int8-dynamic", 0.993, 22.0, 870),
            candidate("int4-weight", 0.985, 24.0, 860)]


def comparison(cands: list[CandidateResult], **options: object):  # type: ignore[no-untyped-def]
    opts = CompareOptions(**options)  # type: ignore[arg-type]
    profiles = resolve_profiles(PLATFORMS)
    return assemble("models/minilm", {}, "test", opts, profiles,
                    [evaluate_candidate(c, profiles, opts) for c in cands])


def oracle_frontier(cands: list[CandidateResult]) -> set[str]:
    """On the frontier iff no other is at least as small AND at least as faithful, with one strictly better."""
    def size(c: CandidateResult) -> int:
        assert c.package is not None
        return c.package.unzipped_bytes

    def fid(c: CandidateResult) -> float:
        assert c.fidelity is not None
        return c.fidelity.mean

    out = set()
    for c in cands:
        beaten = any(size(o) <= size(c) and fid(o) >= fid(c) and (size(o) < size(c) or fid(o) > fid(c))
                     for o in cands if o is not c)
        if not beaten:
            out.add(c.recipe)
    return out


def test_the_frontier_is_size_against_fidelity_not_every_candidate() -> None:
    cands = five()
    comp = comparison(cands)
    assert set(comp.frontier) == oracle_frontier(cands) == {"fp32", "fp16", "int8", "int8-dynamic"}
    # int4-weight is larger than int8 and less faithful; its faster cold start does not save it
    assert "int4-weight" not in comp.frontier


def test_plot_is_written_with_the_frontier_budget_and_platform_panel(tmp_path: Path) -> None:
    comp = comparison(five())
    path = tmp_path / "compare.png"
    drawn = render_png(comp, path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    assert drawn["png"]["width"] > drawn["png"]["height"] > 0
    marked = {p["recipe"] for p in drawn["size"]["points"] if p["frontier"]}
    assert marked == set(comp.frontier) and len(marked) < len(drawn["size"]["points"])
    budget = drawn["budget"]
    assert budget["value"] == 0.99 and budget["source"] == "task default" and budget["metric"] == "cosine"
    assert budget["drawn_size"] == budget["drawn_cold_start"] == 0.99 and budget["visible"]
    # The platform panel: for every platform and candidate, the cold start check projects at the memory
    # setting its verdict was judged at, and the peak RSS measured here.
    points = {(p["platform"], p["recipe"]): p for p in drawn["platform"]["points"]}
    assert len(points) == len(PLATFORMS) * 5
    for c in comp.candidates:
        assert c.cold_start is not None
        for name in PLATFORMS:
            v = c.verdict(name)
            assert v is not None and v.projection is not None and v.memory_mb is not None
            p = points[(name, c.recipe)]
            assert p["memory_mb"] == v.memory_mb and p["x"] == round(v.projection.total_ms, 1)
            assert p["x"] > c.cold_start.total_ms  # a Lambda share of a vCPU is slower than this machine
            assert p["y"] == round(c.cold_start.peak_rss_mb, 1) <= p["memory_mb"]
    assert {t.split(" ★")[0] for t in drawn["platform"]["labels"]} == {c.recipe for c in comp.candidates}


@pytest.mark.parametrize("floor", [0.995, 0.9])
def test_a_given_fidelity_budget_is_drawn_and_on_the_chart(floor: float, tmp_path: Path) -> None:
    comp = comparison(five(), min_fidelity=floor)
    drawn = render_png(comp, tmp_path / "compare.png")
    assert drawn["budget"]["value"] == drawn["budget"]["drawn_size"] == floor
    assert drawn["budget"]["source"] == "--min-fidelity" and drawn["budget"]["visible"]


def test_a_failed_recipe_and_a_single_candidate_still_render(tmp_path: Path) -> None:
    broken = CandidateResult("int8-static", "candidates/int8-static", error="step failed")
    comp = comparison([candidate("fp32", 1.0, 86, 900), broken])
    drawn = render_png(comp, tmp_path / "compare.png")
    assert [p["recipe"] for p in drawn["size"]["points"]] == ["fp32"] and comp.frontier == ("fp32",)
    assert (tmp_path / "compare.png").stat().st_size > 0
    unmeasured = dataclasses.replace(comp, candidates=(broken,), frontier=())
    render_png(unmeasured, tmp_path / "empty.png")  # nothing measured: empty panels, no crash
    assert (tmp_path / "empty.png").stat().st_size > 0
