"""`build`: the choice under budgets (each kind of forcing), packaging the winner, and failing cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimserve.errors import SlimserveError
from slimserve.measure import ColdStart, PackageSize
from slimserve.pipeline.build import BuildOptions, decide, default_target, resolve_target
from slimserve.pipeline.check import resolve_profiles
from slimserve.pipeline.compare import CandidateResult, CompareOptions, Fidelity, assemble, evaluate_candidate
from tests.conftest import assert_clean_error, run_cli

MIB = 1024**2
LAYER = 60 * MIB  # the runtime layer every candidate shares


def candidate(recipe: str, fidelity: float, model_mib: float, cold_ms: float, rss_mb: float = 300.0) -> CandidateResult:
    """A candidate with chosen measurements; platform verdicts come from the real profile rules."""
    model = int(model_mib * MIB)
    package = PackageSize(unzipped_bytes=LAYER + model, zipped_bytes=int((LAYER + model) * 0.4),
                          parts={"layer.zip": int(LAYER * 0.4), "function.zip": int(model * 0.9)},
                          unzipped_parts={"layer.zip": LAYER, "function.zip": model})
    cold = ColdStart(import_ms=cold_ms * 0.6, load_ms=cold_ms * 0.3, first_inference_ms=cold_ms * 0.1,
                     total_ms=cold_ms, warm_ms=5.0, peak_rss_mb=rss_mb, runs=3, python="3.12")
    return CandidateResult(recipe, f"candidates/{recipe}", model_bytes=model,
                           fidelity=Fidelity("cosine", fidelity, fidelity - 0.01, samples=100),
                           package=package, cold_start=cold)


def comparison(*cands: CandidateResult, platform: str = "aws-lambda-zip") -> Any:
    profiles = resolve_profiles([platform])
    options = CompareOptions()
    evaluated = [evaluate_candidate(c, profiles, options) for c in cands]
    return assemble("model", {}, "test", options, profiles, evaluated)


# fp32: faithful, big, slow to load; int8: nearly as faithful, small; int4: smallest, least faithful, and
# (on this synthetic machine) slowest to start because its weights are unpacked at load.
FP32 = candidate("fp32", 1.0, 86, 900)
INT8 = candidate("int8", 0.9995, 23, 500)
INT4 = candidate("int4-weight", 0.985, 15, 700)


def test_without_budgets_the_smallest_fitting_deployment_wins() -> None:
    decision = decide(comparison(FP32, INT8, INT4), BuildOptions())
    assert decision.winner == "int4-weight"
    assert all(not m for m in decision.misses.values())


def test_fidelity_forced_choice() -> None:
    decision = decide(comparison(FP32, INT8, INT4), BuildOptions(min_fidelity=0.99))
    assert decision.winner == "int8"
    assert decision.misses["int4-weight"] == ("fidelity 0.9850 < 0.99 (short by 0.0050)",)
    assert decide(comparison(FP32, INT8, INT4), BuildOptions(min_fidelity=0.9999)).winner == "fp32"


def test_cold_start_forced_choice() -> None:
    decision = decide(comparison(FP32, INT8, INT4), BuildOptions(max_cold_start_ms=600))
    assert decision.winner == "int8"  # int4-weight is smaller but starts in 700 ms
    assert decision.misses["int4-weight"] == ("cold start 700 ms > 600 ms (over by 100 ms)",)
    assert decision.misses["fp32"] == ("cold start 900 ms > 600 ms (over by 300 ms)",)


def test_platform_forced_choice() -> None:
    # The smallest candidate needs more memory than Lambda's largest setting: it does not fit the platform.
    hungry = candidate("int4-weight", 0.985, 15, 700, rss_mb=9000)
    decision = decide(comparison(FP32, INT8, hungry), BuildOptions())
    assert decision.winner == "int8"
    (miss,) = decision.misses["int4-weight"]
    assert miss.startswith("does not fit aws-lambda-zip: ") and "above the largest setting" in miss
    # Too big unzipped for a Lambda zip (function + layers > 250 MiB) but fine in a container image.
    huge = candidate("fp32", 1.0, 300, 900)
    assert decide(comparison(huge), BuildOptions(min_fidelity=0.9999)).winner is None
    zipped = decide(comparison(huge), BuildOptions(min_fidelity=0.9999)).misses["fp32"][0]
    assert "unzipped" in zipped and "250 MiB" in zipped
    container = decide(comparison(huge, platform="aws-lambda-container"),
                       BuildOptions(platform="aws-lambda-container", min_fidelity=0.9999))
    assert container.winner == "fp32"


def test_memory_setting_projects_the_cold_start_budget() -> None:
    # At 512 MB Lambda has ≈0.29 vCPU: a 500 ms cold start measured on one vCPU projects to ≈1.7 s.
    assert decide(comparison(INT8), BuildOptions(max_cold_start_ms=1000)).winner == "int8"
    options = BuildOptions(max_cold_start_ms=1000, compare=CompareOptions(memory_mb=512))
    profiles = resolve_profiles(["aws-lambda-zip"])
    evaluated = [evaluate_candidate(INT8, profiles, options.compare)]
    decision = decide(assemble("m", {}, "t", options.compare, profiles, evaluated), options)
    assert decision.winner is None
    assert decision.misses["int8"][0].startswith("cold start 17") and "> 1000 ms" in decision.misses["int8"][0]
    assert "projected onto aws-lambda-zip at 512 MB" in decision.cold_start_basis


def test_nothing_meets_the_budgets_lists_every_candidate_and_failed_recipes() -> None:
    broken = CandidateResult("int8-static", "candidates/int8-static", error="step int8-static failed: boom")
    decision = decide(comparison(FP32, INT8, INT4, broken), BuildOptions(min_fidelity=0.9999, max_cold_start_ms=400))
    assert decision.winner is None
    assert decision.misses["fp32"] == ("cold start 900 ms > 400 ms (over by 500 ms)",)
    assert decision.misses["int8"] == ("fidelity 0.9995 < 0.9999 (short by 0.0004)",
                                       "cold start 500 ms > 400 ms (over by 100 ms)")
    assert len(decision.misses["int4-weight"]) == 2
    assert decision.misses["int8-static"] == ("failed: step int8-static failed: boom",)


def test_within_the_size_tolerance_the_most_faithful_wins() -> None:
    # The case: int8-dynamic saves 0.3 MiB but its worst text is at cosine 0.968 (int8: 0.9991).
    from dataclasses import replace

    from slimserve.selection import SizeTolerance

    dyn = replace(candidate("int8-dynamic", 0.995, 22.0, 480), fidelity=Fidelity("cosine", 0.995, 0.968, samples=100))
    int8 = replace(candidate("int8", 0.9995, 22.3, 500), fidelity=Fidelity("cosine", 0.9995, 0.9991, samples=100))
    decision = decide(comparison(FP32, int8, dyn), BuildOptions(min_fidelity=0.99))
    assert decision.winner == "int8" and decision.runner_up == "int8-dynamic"
    assert decision.why == ("worst-sample fidelity 0.9991 vs 0.9680 for +0.3 MiB (within 10% or 2 MiB of the "
                            "smallest, int8-dynamic); runner-up int8-dynamic")
    strict = decide(comparison(FP32, int8, dyn), BuildOptions(min_fidelity=0.99, size_tolerance=SizeTolerance(0, 0)))
    assert strict.winner == "int8-dynamic" and strict.runner_up == "int8"
    assert strict.why.startswith("the smallest deployment that meets every budget; runner-up int8: worst-sample "
                                 "fidelity 0.9991 vs 0.9680 for +0.3 MiB, outside the size tolerance (0% or 0 MiB)")


def test_size_tolerance_options_are_checked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_clean_error(run_cli("build", "m", "-o", str(out), "--size-tolerance-pct", "-1"),
                       contains="--size-tolerance-pct")
    assert_clean_error(run_cli("compare", "m", "-o", str(out), "--size-tolerance-mb", "x"),
                       contains="--size-tolerance-mb")
    assert not out.exists()


def test_targets_follow_the_platform() -> None:
    (zip_profile,) = resolve_profiles(["aws-lambda-zip"])
    (container_profile,) = resolve_profiles(["aws-lambda-container"])
    (vercel,) = resolve_profiles(["vercel-python"])
    assert default_target(zip_profile) == "lambda"
    assert default_target(container_profile) == "container"
    with pytest.raises(SlimserveError, match="does not deploy to aws-lambda-zip"):
        resolve_target(zip_profile, "container")
    with pytest.raises(SlimserveError, match="cannot package for vercel-python"):
        resolve_target(vercel, None)


# --- the command, end to end on a tiny model (real export, measurements, packaging and check) ----------

def test_build_packages_the_choice_and_checks_it(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("build", str(tiny_onnx), "-o", str(out), "--recipes", "fp32,int8-dynamic",
                     "--min-fidelity", "0.99", "--runs", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)
    compare = json.loads((out / "compare.json").read_text())
    # The oracle, from compare.json itself: among candidates meeting the budget whose deployment is within
    # max(10%, 2 MiB) of the smallest, the best worst-sample fidelity, then mean, then size.
    eligible = [c for c in compare["candidates"] if c["fidelity"]["mean"] >= 0.99
                and c["platforms"]["aws-lambda-zip"]["fits"]]
    smallest = min(c["deploy"]["unzipped_bytes"] for c in eligible)
    near = [c for c in eligible if c["deploy"]["unzipped_bytes"] <= smallest + max(0.10 * smallest, 2 * MIB)]
    best = min(near, key=lambda c: (-c["fidelity"]["min"], -c["fidelity"]["mean"], c["deploy"]["unzipped_bytes"]))
    assert build["chosen"] == best["recipe"] and build["fits"] is True
    assert build["size_tolerance"] == {"pct": 10.0, "mib": 2.0}
    assert build["runner_up"] == next(c["recipe"] for c in eligible if c["recipe"] != best["recipe"])
    assert build["why"]
    assert {p.name for p in (out / "package").iterdir()} >= {"layer.zip", "function.zip", "template.yaml",
                                                              "slimserve.json", "DEPLOY.md"}
    check = json.loads((out / "check.json").read_text())
    assert check["fits"] is True and check["model"]["recipe"] == best["recipe"]
    packaged = build["package"]
    assert check["package"]["zipped_bytes"] == packaged["layer.zip"]["bytes"] + packaged["function.zip"]["bytes"]
    # The check on the package measured the same bytes compare measured (same input, same bytes).
    assert check["package"]["unzipped_bytes"] == best["deploy"]["unzipped_bytes"]
    summary = (out / "build.md").read_text()
    assert summary.startswith(f"## slimserve build: ✅ `{best['recipe']}`") and "## slimserve compare" in summary


def test_build_fails_cleanly_when_nothing_meets_the_budgets(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("build", str(tiny_onnx), "-o", str(out), "--recipes", "fp32,int8-dynamic",
                     "--max-cold-start", "1", "--runs", "1")
    assert_clean_error(result, code=1, contains="no candidate meets every budget for aws-lambda-zip")
    for recipe in ("fp32", "int8-dynamic"):
        assert f"{recipe}: cold start " in result.stderr and "> 1 ms (over by" in result.stderr
        assert f"{recipe}: missed cold start" in result.stdout
    assert (out / "compare.json").is_file() and (out / "compare.png").is_file()
    assert not (out / "package").exists() and not (out / "check.json").exists()
    build = json.loads((out / "build.json").read_text())
    assert build["chosen"] is None and build["fits"] is False
    assert set(build["misses"]) == {"fp32", "int8-dynamic"}
    assert "no candidate meets the budgets" in (out / "build.md").read_text()


def test_build_junit_on_stdout_fails_with_the_exit_code(tiny_onnx: Path, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    result = run_cli("build", str(tiny_onnx), "-o", str(tmp_path / "out"), "--recipes", "fp32",
                     "--max-cold-start", "1", "--runs", "1", "--format", "junit")
    assert_clean_error(result, code=1, contains="no candidate meets every budget")
    root = ET.fromstring(result.stdout)  # stdout is the report alone; progress and the error go to stderr
    (failure,) = root.findall("./testsuite/testcase/failure")
    assert failure.get("message") == "no candidate meets every budget for aws-lambda-zip"
    assert (failure.text or "").startswith("fp32: cold start ")


def test_build_bad_input_is_one_line_and_leaves_no_output(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_clean_error(run_cli("build", str(tiny_onnx), "-o", str(out), "--platform", "aws-lambda-zp"),
                       contains="did you mean 'aws-lambda-zip'")
    assert_clean_error(run_cli("build", str(tiny_onnx), "-o", str(out), "--target", "container"),
                       contains="does not deploy to aws-lambda-zip")
    assert_clean_error(run_cli("build", str(tiny_onnx), "-o", str(out), "--recipes", "int9"), contains="int9")
    assert_clean_error(run_cli("build", str(tiny_onnx), "-o", str(out), "--memory", "20000"),
                       contains="not a memory setting")
    assert not out.exists()


def test_build_for_a_container_platform_checks_the_real_image(tiny_onnx: Path, tmp_path: Path) -> None:
    from tests.registry_fixture import make_base_layout

    base = make_base_layout(tmp_path / "base" / "layout")
    out = tmp_path / "out"
    result = run_cli("build", str(tiny_onnx), "-o", str(out), "--platform", "aws-lambda-container",
                     "--base", f"oci:{base}", "--recipes", "fp32", "--runs", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)
    assert build["chosen"] == "fp32" and build["target"] == "container"
    assert build["package"]["kind"] == "container" and (out / "package" / "image" / "index.json").is_file()
    check = json.loads((out / "check.json").read_text())
    image = next(c for c in check["platforms"]["aws-lambda-container"]["checks"] if c["id"] == "image-size")
    assert image["status"] == "pass" and image["estimate"] is False  # the built image, not the estimate
    assert check["package"]["image_bytes"] == build["package"]["image_bytes"]


def test_formats_come_from_the_renderer_tables() -> None:
    from slimserve.report.build_report import FORMATS as BUILD_FORMATS
    from slimserve.report.comparison import FORMATS as COMPARE_FORMATS

    assert BUILD_FORMATS == ("text", "json", "markdown", "junit", "github")
    assert COMPARE_FORMATS == ("text", "json", "markdown")
    build_help = " ".join(run_cli("build", "--help").stdout.split())
    compare_help = " ".join(run_cli("compare", "--help").stdout.split())
    assert "[text|json|markdown|junit|github]" in build_help
    assert "[text|json|markdown]" in compare_help
