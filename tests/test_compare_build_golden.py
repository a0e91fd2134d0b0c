"""compare's and build's outputs, from fixed in-memory results, compared with stored snapshots (tests/golden/).

Every number comes from hand-made measurements held against the real profile rules, so the snapshots prove
that a refactor of the result models and renderers keeps the bytes users and CI read: the files in OUT
(compare.json/.md, build.json/.md) and what the commands print on stdout. The machine description and
library versions (the only host-dependent values) are fixed here.

Regenerate after an intended change with: SLIMSERVE_UPDATE_GOLDEN=1 pytest tests/test_compare_build_golden.py
"""

from __future__ import annotations

import dataclasses
import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from slimserve.measure.latency import Latency
from slimserve.pipeline.build import BuildOptions, BuildResult, decide, write_build
from slimserve.pipeline.check import CheckOptions, check_facts, resolve_profiles
from slimserve.pipeline.compare import (
    CandidateResult,
    CompareOptions,
    Comparison,
    Machine,
    assemble,
    evaluate_candidate,
    write_outputs,
)
from slimserve.profiles.rules import DeploymentFacts
from slimserve.report.build_report import FORMATS as BUILD_FORMATS
from slimserve.report.comparison import FORMATS as COMPARE_FORMATS
from tests.test_build import FP32, INT4, INT8, MIB, candidate

GOLDEN = Path(__file__).resolve().parent / "golden"
EXT = {"junit": "xml", "github": "txt"}
MACHINE = Machine(cpu="Golden CPU @ 2.00GHz", cpus=2, arch="x86_64", vnni=(), avx512=False, avx2=True)
VERSIONS = {"onnx": "1.0.0", "onnxruntime": "1.0.0", "python": "3.12.0", "slimserve": "0.0.0"}
LATENCY = {"fp32": (9.5, 61.0), "int8": (4.25, 22.5), "int8-dynamic": (0.75, 180.0), "int4-weight": (5.0, 30.0)}


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SLIMSERVE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}: run with SLIMSERVE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def comparison_of(cands: list[CandidateResult], platforms: list[str], options: CompareOptions) -> Comparison:
    profiles = resolve_profiles(platforms)
    evaluated = []
    for i, c in enumerate(cands):
        b1, b8 = LATENCY.get(c.recipe, (3.0, 12.0))
        lat = Latency(load_ms=10.0, batch1_ms=b1, batch8_ms=b8, runs=20, threads=1) if c.error is None else None
        c = dataclasses.replace(c, latency=lat, build_seconds=1.5 * (i + 1), measure_seconds=2.25 * (i + 1))
        evaluated.append(evaluate_candidate(c, profiles, options))
    comp = assemble("models/minilm", {"kind": "onnx", "path": "models/minilm/model.onnx", "sha256": "ab" * 32},
                    "built-in (64 sentences)", options, profiles, evaluated)
    return dataclasses.replace(comp, machine=MACHINE, versions=dict(VERSIONS))


BROKEN = CandidateResult("int8-static", "candidates/int8-static", error="step int8-static failed: no calibration data",
                         build_seconds=0.5)
HUGE = candidate("fp16", 0.99999, 300, 1200, rss_mb=900)  # too big for a Lambda zip, fine in a container


@pytest.fixture
def comparison() -> Comparison:
    """Two platforms; a dominated candidate, one that fits only the container, and a recipe that failed."""
    dominated = candidate("int8-dynamic", 0.993, 23, 650)
    return comparison_of([FP32, HUGE, INT8, dominated, INT4, BROKEN], ["aws-lambda-zip", "aws-lambda-container"],
                         CompareOptions())


def lambda_artifacts(memory_mb: int) -> dict[str, Any]:
    return {"kind": "lambda", "memory_mb": memory_mb, "handler": "lambda_handler.handler",
            "layer.zip": {"bytes": 25_165_824, "unzipped_bytes": 62_914_560, "sha256": "11" * 32},
            "function.zip": {"bytes": 21_705_523, "unzipped_bytes": 24_117_248, "sha256": "22" * 32},
            "files": ["layer.zip", "function.zip", "template.yaml", "slimserve.json", "DEPLOY.md"]}


def build_result(folder: Path, scenario: str) -> tuple[BuildResult, str]:
    """One build per scenario, written to `folder` the way run_build writes OUT (without packaging)."""
    budgets = {"packaged": BuildOptions(min_fidelity=0.99),
               "no-winner": BuildOptions(min_fidelity=0.9999, max_cold_start_ms=400),
               "fails-check": BuildOptions(min_fidelity=0.99)}[scenario]
    comp = comparison_of([FP32, INT8, INT4, BROKEN], ["aws-lambda-zip"], budgets.compare)
    decision = decide(comp, budgets)
    result = BuildResult(out=folder, comparison=comp, decision=decision, target="lambda")
    if decision.winner is not None:
        c = comp.candidate(decision.winner)
        assert c.package is not None and c.cold_start is not None
        package = c.package if scenario == "packaged" else dataclasses.replace(
            c.package, unzipped_bytes=c.package.unzipped_bytes + 200 * MIB)  # what was written grew
        facts = DeploymentFacts(package=package, cold_start=c.cold_start, python="3.12", arch="x86_64",
                                fidelity_mean=0.9995, fidelity_min=0.9895)
        options = CheckOptions(min_fidelity=budgets.min_fidelity, max_cold_start_ms=budgets.max_cold_start_ms)
        report = check_facts(f"OUT/candidates/{decision.winner}", [comp.platforms[0]], facts, options,
                             {"path": f"OUT/candidates/{decision.winner}/model.onnx", "bytes": int(23 * MIB),
                              "recipe": decision.winner, "fidelity": {"metric": "cosine", "mean": 0.9995}})
        memory = report.platforms[0].recommended_memory_mb or 0
        result = dataclasses.replace(result, check=report, artifacts=lambda_artifacts(memory))
    folder.mkdir(parents=True, exist_ok=True)
    write_outputs(folder, comp)
    write_build(folder, result)
    return result, "lambda"


def masked(text: str, folder: Path) -> str:
    return text.replace(str(folder), "OUT")


# --- compare ------------------------------------------------------------------------------------------

def test_compare_files_match_their_snapshots(comparison: Comparison, tmp_path: Path) -> None:
    write_outputs(tmp_path, comparison)
    assert_golden("compare.json", (tmp_path / "compare.json").read_text(encoding="utf-8"))
    assert_golden("compare.md", (tmp_path / "compare.md").read_text(encoding="utf-8"))


def test_compare_stdout_text_matches_its_snapshot(comparison: Comparison, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from slimserve.report.comparison import renderer

    renderer("text")(comparison, sys.stdout)
    assert_golden("compare.stdout.txt", capsys.readouterr().out)


# --- build --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["packaged", "no-winner", "fails-check"])
def test_build_files_and_stdout_match_their_snapshots(scenario: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from slimserve.commands.build import _summary

    result, _ = build_result(tmp_path, scenario)
    assert_golden(f"build.{scenario}.json", (tmp_path / "build.json").read_text(encoding="utf-8"))
    assert_golden(f"build.{scenario}.md", (tmp_path / "build.md").read_text(encoding="utf-8"))
    _summary(result, "json")
    assert capsys.readouterr().out == (tmp_path / "build.json").read_text(encoding="utf-8")
    _summary(result, "text")
    assert_golden(f"build.{scenario}.stdout.txt", masked(capsys.readouterr().out, tmp_path))


def test_build_scenarios_are_what_they_say(tmp_path: Path) -> None:
    packaged, _ = build_result(tmp_path / "a", "packaged")
    assert packaged.decision.winner == "int8" and packaged.fits
    nothing, _ = build_result(tmp_path / "b", "no-winner")
    assert nothing.decision.winner is None and nothing.check is None
    failing, _ = build_result(tmp_path / "c", "fails-check")
    assert failing.decision.winner == "int8" and failing.check is not None and not failing.fits


# --- every format of the one report value -------------------------------------------------------------

def rendered(render: Any, value: Any) -> str:
    out = io.StringIO()
    render(value, out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", COMPARE_FORMATS)
def test_every_compare_renderer_matches_its_snapshot(comparison: Comparison, fmt: str, tmp_path: Path) -> None:
    from slimserve.report.comparison import renderer

    drawn = write_outputs(tmp_path, comparison)  # the report as compare returns it: with what the plot drew
    text = rendered(renderer(fmt), drawn)
    assert text == rendered(renderer(fmt), drawn)  # same report, same bytes
    if fmt == "json":
        assert text == (tmp_path / "compare.json").read_text(encoding="utf-8")  # stdout is the file
    elif fmt == "markdown":
        assert text == (tmp_path / "compare.md").read_text(encoding="utf-8")
    else:
        assert_golden("compare.stdout.txt", text)


@pytest.mark.parametrize("fmt", BUILD_FORMATS)
@pytest.mark.parametrize("scenario", ["packaged", "no-winner", "fails-check"])
def test_every_build_renderer_matches_its_snapshot(scenario: str, fmt: str, tmp_path: Path) -> None:
    from slimserve.report.build_report import renderer

    result, _ = build_result(tmp_path, scenario)
    text = rendered(renderer(fmt), result)
    assert text == rendered(renderer(fmt), result)
    files = {"json": "build.json", "markdown": "build.md"}
    if fmt in files:
        assert text == (tmp_path / files[fmt]).read_text(encoding="utf-8")  # stdout is the file
    elif fmt == "text":  # the command adds where the files went
        assert_golden(f"build.{scenario}.stdout.txt",
                      masked(text, tmp_path) + "wrote OUT (build.md, build.json, check.*, compare.*)\n")
    else:
        assert_golden(f"build.{scenario}.{fmt}.{EXT[fmt]}", masked(text, tmp_path))


@pytest.mark.parametrize("scenario", ["packaged", "no-winner", "fails-check"])
def test_build_junit_fails_exactly_when_the_build_fails(scenario: str, tmp_path: Path) -> None:
    from slimserve.report.build_report import renderer

    result, _ = build_result(tmp_path, scenario)
    root = ET.fromstring(rendered(renderer("junit"), result))
    cases = root.findall("./testsuite/testcase")
    failures = root.findall("./testsuite/testcase/failure")
    assert int(root.get("tests", "0")) == len(cases) >= 1
    assert int(root.get("failures", "0")) == len(failures)
    assert (len(failures) > 0) == (not result.fits)  # build exits 1 exactly when it does not fit
    (choice,) = root.findall("./testsuite[@name='choice']/testcase")
    assert (choice.find("failure") is not None) == (result.decision.winner is None)
    if result.check is not None:  # the package's check: one case per rule, as check writes them
        assert len(cases) == 1 + sum(len(v.findings) for v in result.check.platforms)
    for suite in root.findall("testsuite"):
        assert int(suite.get("tests", "0")) == len(suite.findall("testcase"))
        assert int(suite.get("failures", "0")) == len(suite.findall("testcase/failure"))


@pytest.mark.parametrize("scenario", ["packaged", "no-winner", "fails-check"])
def test_build_github_annotations_are_one_line_each(scenario: str, tmp_path: Path) -> None:
    from slimserve.report.build_report import renderer

    result, _ = build_result(tmp_path, scenario)
    lines = rendered(renderer("github"), result).splitlines()
    assert lines and all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    assert lines[0] == ("::warning title=slimserve build%3A int8-static failed::step int8-static failed: "
                        "no calibration data")
    last = lines[-1]
    assert last.startswith("::notice title=slimserve build aws-lambda-zip::" if result.fits
                           else "::error title=slimserve build aws-lambda-zip::")
    if result.decision.winner is None:  # every candidate's misses, one per (escaped) line
        assert "%0Aint8: fidelity 0.9995 < 0.9999" in last and "\n" not in last


def test_text_shows_errors_with_brackets_verbatim(comparison: Comparison) -> None:
    from slimserve.report.comparison import renderer

    broken = dataclasses.replace(BROKEN, error="step failed: shape [/1, 384] [bold]")
    odd = dataclasses.replace(comparison, candidates=(*comparison.candidates[:-1], broken))
    assert "failed int8-static: step failed: shape [/1, 384] [bold]\n" in rendered(renderer("text"), odd)
