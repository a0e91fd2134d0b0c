"""`compare`: the table, frontier and recommendation, the three files, and a real MiniLM comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimserve.measure.latency import Latency
from slimserve.pipeline.check import resolve_profiles
from slimserve.pipeline.compare import CompareOptions, assemble, evaluate_candidate, write_outputs
from slimserve.report.compare_json import comparison_dict
from tests.conftest import assert_clean_error, run_cli
from tests.test_build import FP32, INT4, INT8, candidate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic(*cands: Any, platforms: tuple[str, ...] = ("aws-lambda-zip", "aws-lambda-container")) -> Any:
    from dataclasses import replace

    profiles = resolve_profiles(list(platforms))
    options = CompareOptions()
    lat = Latency(load_ms=10.0, batch1_ms=3.0, batch8_ms=12.0, runs=20, threads=1)
    evaluated = [evaluate_candidate(replace(c, latency=lat), profiles, options) for c in cands]
    return assemble("all-MiniLM-L6-v2", {"kind": "hf"}, "built-in", options, profiles, evaluated)


DOMINATED = candidate("int8-dynamic", 0.993, 23, 650)  # int8 is as small, more faithful and faster


def check_png(path: Path, plot: dict[str, Any], data: dict[str, Any]) -> None:
    """The file is a PNG of the reported size, and what was drawn is every measured candidate."""
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (plot["png"]["width"], plot["png"]["height"])
    measured = {c["recipe"]: c for c in data["candidates"] if c["error"] is None}
    for panel in ("size", "cold_start"):
        points = {p["recipe"]: p for p in plot[panel]["points"]}
        assert set(points) == set(measured)
        labels = {label.rstrip(" ★") for label in plot[panel]["labels"]}
        assert labels == set(measured)  # matplotlib's own text artists, one per point
        for recipe, c in measured.items():
            assert points[recipe]["y"] == pytest.approx(c["fidelity"]["mean"], abs=1e-6)
            assert points[recipe]["frontier"] == c["frontier"]
            expected_x = (c["deploy"]["unzipped_bytes"] / 1024**2 if panel == "size"
                          else c["cold_start"]["total_ms"])
            assert points[recipe]["x"] == pytest.approx(expected_x, abs=0.1)
    if data["recommendation"]:
        assert f"{data['recommendation']['recipe']} ★" in plot["size"]["labels"]


def test_frontier_recommendation_and_files(tmp_path: Path) -> None:
    comp = synthetic(FP32, INT8, DOMINATED, INT4)
    assert comp.frontier == ("fp32", "int8", "int4-weight")
    # No budgets: the default floor (0.99 mean cosine) rules out int4-weight; int8 is the smallest left.
    assert comp.recommendation == "int8"
    data = comparison_dict(write_outputs(tmp_path, comp))
    on_disk = json.loads((tmp_path / "compare.json").read_text())
    assert on_disk == json.loads(json.dumps(data))
    rows = {c["recipe"]: c for c in on_disk["candidates"]}
    assert [c["recipe"] for c in on_disk["candidates"]] == ["fp32", "int8", "int8-dynamic", "int4-weight"]
    assert rows["int8-dynamic"]["frontier"] is False and rows["int8"]["frontier"] is True
    int8 = rows["int8"]
    assert int8["bytes"] == 23 * 1024**2
    assert set(int8["fidelity"]) >= {"metric", "mean", "min"}
    assert set(int8["latency"]) >= {"batch1_ms", "batch8_ms"}
    assert set(int8["cold_start"]) >= {"import_ms", "load_ms", "first_inference_ms", "total_ms"}
    assert int8["peak_rss_mb"] == 300.0
    assert int8["platforms"]["aws-lambda-zip"]["fits"] is True
    assert int8["platforms"]["aws-lambda-zip"]["reason"].startswith("fits at ")
    assert on_disk["recommendation"]["recipe"] == "int8"
    check_png(tmp_path / "compare.png", on_disk["plot"], on_disk)
    limits = {x["platform"]: x for x in on_disk["plot"]["limits"]}
    assert limits["aws-lambda-zip"] == {"platform": "aws-lambda-zip", "bytes": 262_144_000, "kind": "unzipped",
                                        "label": "aws-lambda-zip: 250 MiB unzipped", "drawn": True}
    assert limits["aws-lambda-container"]["drawn"] is False  # 10 GB would squash every point: listed instead
    md = (tmp_path / "compare.md").read_text()
    head = md.splitlines()
    assert head[0].startswith("## slimserve compare") and head[2].startswith("**Recommended: `int8`**")
    assert "| ★◆ | int8 |" in md and "|  | int8-dynamic |" in md and "| ◆ | int4-weight |" in md


def test_platform_failures_carry_their_reason(tmp_path: Path) -> None:
    huge = candidate("fp32", 1.0, 300, 900)
    comp = synthetic(huge, INT8)
    row = next(c for c in comparison_dict(comp)["candidates"] if c["recipe"] == "fp32")
    assert row["platforms"]["aws-lambda-zip"]["fits"] is False
    assert "unzipped-size" in row["platforms"]["aws-lambda-zip"]["failed"]
    assert "> 250 MiB limit for function + all layers" in row["platforms"]["aws-lambda-zip"]["reason"]
    assert row["platforms"]["aws-lambda-container"]["fits"] is True
    write_outputs(tmp_path, comp)
    assert "`fp32` on aws-lambda-zip: unzipped" in (tmp_path / "compare.md").read_text()


def test_no_recommendation_when_nothing_fits(tmp_path: Path) -> None:
    comp = synthetic(candidate("int4-weight", 0.95, 15, 700))
    assert comp.recommendation is None and "no candidate fits" in comp.recommendation_reason
    write_outputs(tmp_path, comp)
    assert "**No recommendation**" in (tmp_path / "compare.md").read_text()


def test_bad_input_is_one_line_and_writes_nothing(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_clean_error(run_cli("compare", str(tiny_onnx), "-o", str(out), "--recipes", "fp32,int9"),
                       contains="unknown recipe step 'int9'")
    assert_clean_error(run_cli("compare", str(tiny_onnx), "-o", str(out), "--recipes", "fp32", "--all"),
                       contains="cannot be used together")
    assert_clean_error(run_cli("compare", str(tiny_onnx), "-o", str(out), "--recipes", "fp32,fp32"),
                       contains="listed twice")
    assert_clean_error(run_cli("compare", str(tiny_onnx), "-o", str(out), "--platform", "lambda"),
                       contains="lambda")
    assert_clean_error(run_cli("compare", str(tmp_path / "missing.onnx"), "-o", str(out)),
                       contains="does not exist")
    assert not out.exists()


def test_jobs_is_documented_as_building_only() -> None:
    text = " ".join(run_cli("compare", "--help").stdout.split())
    assert "Only building runs in parallel" in text and "one candidate at a time" in text


# --- the real model ---------------------------------------------------------------------------------

MINILM_RECIPES = ("fp32", "fp16", "int8", "int8-dynamic", "int4-weight")


@pytest.fixture(scope="session")
def minilm_comparison(minilm_prepared: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Five recipes on MiniLM, compared once per session (the export is the shared session fixture)."""
    from slimserve.pipeline.compare import run_compare

    out = tmp_path_factory.mktemp("minilm-compare") / "out"
    options = CompareOptions(runs=2, latency_runs=5)
    comp = run_compare("all-MiniLM-L6-v2", MINILM_RECIPES, out, options=options, prepared=minilm_prepared)
    return comp, out


@pytest.mark.slow
def test_minilm_compare_of_five_recipes(minilm_comparison: tuple[Any, Path]) -> None:
    _, out = minilm_comparison
    data = json.loads((out / "compare.json").read_text())
    rows = {c["recipe"]: c for c in data["candidates"]}
    assert list(rows) == list(MINILM_RECIPES)
    assert all(c["error"] is None for c in rows.values()), {r: c["error"] for r, c in rows.items()}
    for recipe, c in rows.items():
        folder = out / c["folder"]
        manifest = json.loads((folder / "slimserve.json").read_text())
        assert manifest["recipe"] == recipe and c["bytes"] == manifest["model"]["bytes"]
        assert c["fidelity"]["mean"] == manifest["fidelity"]["mean"]  # read from the manifest, not re-measured
        assert c["deploy"]["unzipped_bytes"] > c["bytes"]  # the runtime layer is part of the deployment
        assert 0 < c["cold_start"]["total_ms"] and c["peak_rss_mb"] > 50
        assert c["latency"]["batch1_ms"] > 0 and c["latency"]["batch8_ms"] > 0
        assert set(c["platforms"]) == {"aws-lambda-zip", "aws-lambda-container"}
    # Sizes follow the recipes, and the fidelity bars of the optimizer hold here too.
    assert rows["fp32"]["bytes"] > rows["fp16"]["bytes"] > rows["int8"]["bytes"] > rows["int4-weight"]["bytes"]
    assert rows["fp32"]["fidelity"]["mean"] > 0.9999 and rows["int8"]["fidelity"]["mean"] >= 0.999
    assert all(c["platforms"]["aws-lambda-zip"]["fits"] for c in rows.values())
    assert data["frontier"] and set(data["frontier"]) <= set(rows)
    # The recommendation: among candidates with mean cosine ≥ 0.99 that fit both platforms, those within
    # max(10%, 2 MiB) of the smallest deployment count as equally small; the best worst sample (then mean) wins.
    ok = [c for c in rows.values() if c["fidelity"]["mean"] >= 0.99 and all(v["fits"] for v in c["platforms"].values())]
    smallest = min(c["deploy"]["unzipped_bytes"] for c in ok)
    near = [c for c in ok if c["deploy"]["unzipped_bytes"] <= smallest + max(0.1 * smallest, 2 * 1024**2)]
    best = min(near, key=lambda c: (-c["fidelity"]["min"], -c["fidelity"]["mean"], c["deploy"]["unzipped_bytes"]))
    assert data["recommendation"]["recipe"] == best["recipe"]
    assert data["size_tolerance"] == {"pct": 10.0, "mib": 2.0}
    check_png(out / "compare.png", data["plot"], data)
    md = (out / "compare.md").read_text()
    assert md.splitlines()[2].startswith(f"**Recommended: `{data['recommendation']['recipe']}`**")
    assert all(f"| {r} |" in md for r in MINILM_RECIPES)


def test_jobs_build_in_parallel_and_keep_the_order(tiny_onnx: Path, tmp_path: Path) -> None:
    from slimserve.pipeline.compare import run_compare

    recipes = ["int8-dynamic", "fp32", "fp16"]
    comp = run_compare(str(tiny_onnx), recipes, tmp_path / "out", jobs=2,
                       options=CompareOptions(runs=1, latency_runs=3))
    assert [c.recipe for c in comp.candidates] == recipes and all(c.ok for c in comp.candidates)
    assert comp.options.jobs == 2
    for recipe in recipes:
        manifest = json.loads((tmp_path / "out" / "candidates" / recipe / "slimserve.json").read_text())
        assert manifest["recipe"] == recipe


def test_candidates_are_measured_in_interleaved_rounds(tiny_onnx: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Round r measures every candidate once, in an order rotated by r (A B C, B C A, C A B), so a machine
    that slows for a while slows all of them; the medians are over the rounds and the spread is kept.
    The real measurements run; the spy only records which folder each fresh-process measurement was for."""
    from slimserve.measure import latency as latency_module
    from slimserve.pipeline import check as check_module
    from slimserve.pipeline.compare import rotated, run_compare

    order: list[tuple[str, str]] = []
    real_cold, real_warm = check_module.measure_cold_start, latency_module.measure_latency

    def cold_spy(bundle: Any, *args: Any, **kwargs: Any) -> Any:
        order.append(("cold", bundle.root.name))
        return real_cold(bundle, *args, **kwargs)

    def warm_spy(folder: Path, *args: Any, **kwargs: Any) -> Any:
        order.append(("warm", Path(folder).name))
        return real_warm(folder, *args, **kwargs)

    monkeypatch.setattr(check_module, "measure_cold_start", cold_spy)
    monkeypatch.setattr(latency_module, "measure_latency", warm_spy)
    recipes = ["fp32", "int8-dynamic", "fp16"]
    comp = run_compare(str(tiny_onnx), recipes, tmp_path / "out", options=CompareOptions(runs=3, latency_runs=6))
    assert rotated(recipes, 1) == ["int8-dynamic", "fp16", "fp32"]
    cold = [name for kind, name in order if kind == "cold"]
    assert cold == [*rotated(recipes, 0), *rotated(recipes, 1), *rotated(recipes, 2)]
    assert [name for kind, name in order if kind == "warm"] == cold  # three latency rounds, the same rotation
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    for c, measured in zip(data["candidates"], comp.candidates):
        assert c["cold_start"]["runs"] == 3 and len(measured.cold_start.samples["total_ms"]) == 3
        low, high = c["cold_start"]["spread_ms"]
        assert low <= c["cold_start"]["total_ms"] <= high
        assert len(c["latency"]["rounds_batch1_ms"]) == 3 and c["latency"]["runs"] == 6
    assert "interleaved" in data["method"]["cold_start"]
