"""`slimserve check` and `slimserve profiles` as a user runs them: bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import assert_clean_error, run_cli

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def test_unknown_platform(tiny_onnx: Path) -> None:
    assert_clean_error(run_cli("check", str(tiny_onnx), "--platform", "aws-lambda-zp"),
                       contains="did you mean 'aws-lambda-zip'")


def test_no_platform_given(tiny_onnx: Path) -> None:
    assert_clean_error(run_cli("check", str(tiny_onnx)), contains="no platform")


def test_broken_profile_file(tiny_onnx: Path, tmp_path: Path) -> None:
    text = (PROFILES_DIR / "aws-lambda-zip.toml").read_text().replace("[limits.layers]", "[limits.layer]")
    bad = tmp_path / "mine.toml"
    bad.write_text(text)
    assert_clean_error(run_cli("check", str(tiny_onnx), "--profile", str(bad)), contains="did you mean 'layers'")
    bad.write_text("name = ")
    assert_clean_error(run_cli("check", str(tiny_onnx), "--profile", str(bad)), contains="not valid TOML")


def test_incomplete_profile_file(tiny_onnx: Path, tmp_path: Path) -> None:
    bad = tmp_path / "short.toml"
    bad.write_text('name = "mine"\ntitle = "Mine"\n')
    assert_clean_error(run_cli("check", str(tiny_onnx), "--profile", str(bad)), contains="missing required key")


def test_path_without_a_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli("check", str(empty), "--platform", "aws-lambda-zip"), contains="slimserve.json")
    assert_clean_error(run_cli("check", str(tmp_path / "missing"), "--platform", "aws-lambda-zip"),
                       contains="does not exist")


def test_unreadable_model(tmp_path: Path, tiny_onnx: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model at all" * 10)
    assert_clean_error(run_cli("check", str(garbage), "--platform", "aws-lambda-zip"), contains="ONNX")
    # An output folder whose manifest is fine but whose model file is damaged.
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(tiny_onnx.read_bytes()[:40])
    manifest = {"model": {"path": "model.onnx"}, "runtime": {"kind": "tensor", "task": "tensor"}}
    (folder / "slimserve.json").write_text(json.dumps(manifest))
    assert_clean_error(run_cli("check", str(folder), "--platform", "aws-lambda-zip"), contains="ONNX")


def test_memory_outside_the_platform_range(tiny_onnx: Path) -> None:
    assert_clean_error(run_cli("check", str(tiny_onnx), "--platform", "aws-lambda-zip", "--memory", "20000"),
                       contains="128–10,240 MB")
    assert_clean_error(run_cli("check", str(tiny_onnx), "--platform", "all", "--memory", "1000"),
                       contains="not a memory setting")


def test_bad_option_values(tiny_onnx: Path) -> None:
    assert_clean_error(run_cli("check", str(tiny_onnx), "--platform", "aws-lambda-zip", "--python", "3.9"),
                       contains="3.9")
    assert_clean_error(run_cli("check", str(tiny_onnx), "--platform", "aws-lambda-zip", "--format", "xml"))
    assert_clean_error(run_cli("check", str(tiny_onnx), "--platform", "aws-lambda-zip", "--min-fidelity", "2"))


def test_profiles_list_and_show() -> None:
    listed = run_cli("profiles")
    assert listed.returncode == 0, listed.stderr
    for name in ("aws-lambda-zip", "aws-lambda-container", "gcp-cloud-run", "vercel-python"):
        assert name in listed.stdout
    shown = run_cli("profiles", "show", "aws-lambda-zip")
    assert shown.returncode == 0, shown.stderr
    assert "250 MiB" in shown.stdout and "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html" in shown.stdout
    as_json = json.loads(run_cli("profiles", "show", "gcp-cloud-run", "--json").stdout)
    assert as_json["memory"]["max"] == 32768
    assert_clean_error(run_cli("profiles", "show", "nope"), contains="unknown platform")


def test_real_check_of_a_tiny_tensor_model(tiny_onnx: Path, tmp_path: Path) -> None:
    model = tmp_path / "tiny" / "tiny.onnx"
    model.parent.mkdir()
    shutil.copy(tiny_onnx, model)
    report = tmp_path / "report.json"
    result = run_cli("check", str(model), "--platform", "aws-lambda-zip", "--platform", "aws-lambda-container",
                     "--memory", "1024", "--runs", "2", "--format", "json", "-o", str(report))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "aws-lambda-zip" in result.stdout  # the text table is printed too
    data = json.loads(report.read_text())
    assert data["fits"] is True
    assert set(data["platforms"]) == {"aws-lambda-zip", "aws-lambda-container"}
    assert data["package"]["unzipped_bytes"] > data["package"]["zipped_bytes"] > 0
    assert data["package"]["unzipped_bytes"] < 262_144_000
    cold = data["cold_start"]
    assert cold["runs"] == 2 and 0 < cold["import_ms"] and 0 < cold["total_ms"]
    assert data["peak_rss_mb"] > 0
    tight = run_cli("check", str(model), "--platform", "aws-lambda-zip", "--memory", "128", "--runs", "1",
                    "--max-cold-start", "1", "--format", "github")
    assert tight.returncode == 1, (tight.stdout, tight.stderr)
    assert "::error title=aws-lambda-zip%3A Cold start (estimate)::" in tight.stdout


def test_measured_image_size_replaces_the_estimate_for_that_platform_only() -> None:
    from slimserve.measure import ColdStart, PackageSize
    from slimserve.pipeline.check import CheckOptions, check_facts, resolve_profiles
    from slimserve.profiles.rules import DeploymentFacts

    facts = DeploymentFacts(
        package=PackageSize(unzipped_bytes=80_000_000, zipped_bytes=27_000_000),
        cold_start=ColdStart(import_ms=300, load_ms=20, first_inference_ms=2, total_ms=322, warm_ms=1,
                             peak_rss_mb=90, runs=1, python="3.12"),
        python="3.12", arch="x86_64")
    profiles = resolve_profiles(["aws-lambda-container", "gcp-cloud-run", "aws-lambda-zip"])
    report = check_facts("m", profiles, facts, CheckOptions(), image_bytes={"aws-lambda-container": 11 * 10**9})
    measured = report.verdict("aws-lambda-container").finding("image-size")
    assert measured is not None and measured.status == "fail" and not measured.estimate
    assert report.verdict("gcp-cloud-run").finding("image-size") is None  # Cloud Run documents no image limit
    assert report.verdict("aws-lambda-zip").fits
