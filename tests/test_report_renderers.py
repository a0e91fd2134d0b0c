"""One report fixture rendered by every renderer and compared with stored snapshots (tests/golden/).

Regenerate the snapshots after an intended change with: SLIMSERVE_UPDATE_GOLDEN=1 pytest tests/test_report_renderers.py
"""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slimserve.measure import ColdStart, PackageSize
from slimserve.pipeline.check import CheckOptions, check_facts, resolve_profiles
from slimserve.profiles.rules import DeploymentFacts
from slimserve.report import FORMATS, Report, make_report, renderer
from slimserve.report.github import annotation, escape_data, escape_property

GOLDEN = Path(__file__).resolve().parent / "golden"
EXT = {"text": "txt", "json": "json", "markdown": "md", "junit": "xml", "github": "txt"}
MiB = 1024**2


@pytest.fixture
def report() -> Report:
    """Three platforms: the zip one fails on size (and warns on a direct upload), the others decide alone."""
    package = PackageSize(unzipped_bytes=301 * MiB, zipped_bytes=110 * MiB,
                          parts={"function.zip": 50 * MiB, "layer.zip": 60 * MiB},
                          unzipped_parts={"function.zip": 96 * MiB, "layer.zip": 205 * MiB}, layers=1)
    cold = ColdStart(import_ms=412.5, load_ms=233.1, first_inference_ms=18.4, total_ms=664.0, warm_ms=4.2,
                     peak_rss_mb=402.7, runs=3, python="3.12")
    facts = DeploymentFacts(package=package, cold_start=cold, python="3.12", arch="x86_64",
                            fidelity_mean=0.99931, fidelity_min=0.99512)
    options = CheckOptions(max_cold_start_ms=3000, min_fidelity=0.999)
    profiles = resolve_profiles(["aws-lambda-zip", "gcp-cloud-functions-gen1", "aws-lambda-container"])
    return check_facts("models/minilm-int8", profiles, facts, options,
                       model={"path": "models/minilm-int8/model.onnx", "bytes": 23_000_000, "recipe": "int8"})


def rendered(report: Report, fmt: str) -> str:
    out = io.StringIO()
    renderer(fmt)(report, out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_renderer_matches_its_snapshot(report: Report, fmt: str) -> None:
    text = rendered(report, fmt)
    path = GOLDEN / f"check.{fmt}.{EXT[fmt]}"
    if os.environ.get("SLIMSERVE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}: run with SLIMSERVE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")
    assert rendered(report, fmt) == text  # same report, same bytes


def test_fixture_verdicts(report: Report) -> None:
    fits = {v.name: v.fits for v in report.platforms}
    assert fits == {"aws-lambda-container": True, "aws-lambda-zip": False, "gcp-cloud-functions-gen1": False}
    assert [v.name for v in report.platforms] == sorted(fits)
    assert not report.fits


def test_json_has_the_documented_shape(report: Report) -> None:
    data = json.loads(rendered(report, "json"))
    assert data["fits"] is False
    assert set(data["platforms"]) == {"aws-lambda-container", "aws-lambda-zip", "gcp-cloud-functions-gen1"}
    lam = data["platforms"]["aws-lambda-zip"]
    assert lam["fits"] is False and lam["recommended_memory_mb"] == 704  # 402.7 × 1.5 + 64 = 668 -> 704
    check = next(c for c in lam["checks"] if c["id"] == "unzipped-size")
    assert {"id", "name", "status", "measured", "limit", "unit", "reason", "source"} <= set(check)
    assert check["status"] == "fail" and check["unit"] == "MiB" and check["limit"] == 250
    assert data["package"]["unzipped_bytes"] == 301 * MiB and data["package"]["zipped_bytes"] == 110 * MiB
    assert {"import_ms", "load_ms", "first_inference_ms", "total_ms", "runs"} <= set(data["cold_start"])
    assert data["peak_rss_mb"] == 402.7
    assert lam["projection"]["estimate"] is True


def test_junit_parses_with_one_testcase_per_rule(report: Report) -> None:
    root = ET.fromstring(rendered(report, "junit"))
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    total = sum(len(v.findings) for v in report.platforms)
    fails = sum(1 for v in report.platforms for f in v.findings if f.status == "fail")
    warns = sum(1 for v in report.platforms for f in v.findings if f.status == "warn")
    assert len(cases) == total == int(root.get("tests", "0"))
    assert len(root.findall("./testsuite/testcase/failure")) == fails == int(root.get("failures", "0")) > 0
    assert len(root.findall("./testsuite/testcase/system-out")) == warns > 0
    for suite in root.findall("testsuite"):
        assert int(suite.get("tests", "0")) == len(suite.findall("testcase"))
        assert int(suite.get("failures", "0")) == len(suite.findall("testcase/failure"))


def test_empty_junit_report_is_one_passing_case(report: Report) -> None:
    empty = make_report(path="x", python="3.12", arch="x86_64", package=report.package,
                        cold_start=report.cold_start, verdicts=[])
    root = ET.fromstring(rendered(empty, "junit"))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 1 and not root.findall(".//failure") and root.get("tests") == "1"


def test_github_escaping_follows_the_runner_spec() -> None:
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_property("a: b, c%") == "a%3A b%2C c%25"
    assert annotation("error", "aws: size, zip", "line1\nline2: x, y") == \
        "::error title=aws%3A size%2C zip::line1%0Aline2: x, y"


def test_github_annotations_one_line_each(report: Report) -> None:
    lines = rendered(report, "github").splitlines()
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    problems = sum(1 for v in report.platforms for f in v.findings if f.status != "pass")
    assert len(lines) == problems + len(report.platforms)
    assert any(line.startswith("::warning title=aws-lambda-zip%3A Zipped upload size::") for line in lines)
