"""SnapStart readiness: the handler registers its hooks with the real `snapshot_restore_py` (the module
Lambda's Python 3.12+ runtimes provide), the before-snapshot hook runs an inference on the manifest's warm-up
request, the after-restore hook leaves a working handler, and the template with SnapStart passes cfn-lint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimserve.packagers.target import Target
from tests.conftest import require, run_cli
from tests.test_handler import load_handler

CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def test_hooks_warm_the_model_before_the_snapshot_and_leave_a_working_handler(
        tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import snapshot_restore_py

    out = tmp_path / "out"
    result = run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32")
    assert result.returncode == 0, result.stderr
    warmup = json.loads((out / "slimserve.json").read_text())["runtime"]["warmup"]
    assert warmup == {"x": [[0] * 16]}
    before = list(snapshot_restore_py.get_before_snapshot())
    handler = load_handler(out, monkeypatch)
    assert handler.SNAPSTART
    new = [entry for entry in snapshot_restore_py.get_before_snapshot() if entry not in before]
    assert [func.__name__ for func, _, _ in new] == ["warm_up"]
    runs = []
    real_run = handler.MODEL.run
    monkeypatch.setattr(handler.MODEL, "run", lambda feeds: runs.append(feeds) or real_run(feeds))
    for func, args, kwargs in new:  # what awslambdaric's lambda_runtime_hooks_runner does before the snapshot
        func(*args, **kwargs)
    assert len(runs) == 1, "the before-snapshot hook ran exactly one inference"
    restore = [func for func, _, _ in snapshot_restore_py.get_after_restore() if func.__module__ == handler.__name__]
    for func in restore:
        func()
    answer = handler.handler({"inputs": {"x": [[0.5] * 16]}}, None)
    assert len(answer["outputs"]["y"][0]) == 4


@pytest.mark.parametrize(("python", "snapstart"), [("3.12", True), ("3.13", True), ("3.11", False)])
def test_the_template_enables_snapstart_where_python_supports_it(tmp_path: Path, python: str, snapstart: bool) -> None:
    require(CFN_LINT.is_file(), "cfn-lint (pyproject's test extra)")
    from slimserve.packagers.lambda_target import sam_template

    text = sam_template(Target(python), 1024)  # type: ignore[arg-type]
    assert ("SnapStart:\n        ApplyOn: PublishedVersions" in text) is snapstart
    assert ("AutoPublishAlias: live" in text) is snapstart
    assert 'OPENBLAS_NUM_THREADS: "1"' in text
    path = tmp_path / "template.yaml"
    path.write_text(text)
    proc = subprocess.run([str(CFN_LINT), str(path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_snapstart_flag(tiny_onnx: Path, tmp_path: Path) -> None:
    from tests.conftest import assert_clean_error

    off = run_cli("package", str(tiny_onnx), "--target", "lambda", "-o", str(tmp_path / "off"), "--no-check",
                  "--no-snapstart")
    assert off.returncode == 0, off.stderr
    assert "SnapStart" not in (tmp_path / "off" / "template.yaml").read_text()
    assert "SnapStart is off" in (tmp_path / "off" / "DEPLOY.md").read_text()
    old = run_cli("package", str(tiny_onnx), "--target", "lambda", "-o", str(tmp_path / "old"), "--no-check",
                  "--python", "3.11", "--snapstart")
    assert_clean_error(old, contains="SnapStart needs python3.12")
    assert not (tmp_path / "old").exists()
    wrong = run_cli("package", str(tiny_onnx), "--target", "container", "-o", str(tmp_path / "c"), "--snapstart")
    assert wrong.returncode == 2 and "only to --target lambda" in wrong.stderr


def test_deploy_md_routes_set_what_check_measured_and_show_a_signed_call(tiny_onnx: Path, tmp_path: Path) -> None:
    import re
    import shlex

    out = tmp_path / "pkg"
    result = run_cli("package", str(tiny_onnx), "--target", "lambda", "-o", str(out), "--no-check", "--memory", "768")
    assert result.returncode == 0, result.stderr
    deploy = (out / "DEPLOY.md").read_text()
    assert deploy.count("--memory-size 768 --timeout") == 2 and deploy.count("--environment") == 2
    assert "aws iam create-role" in deploy and "AWSLambdaBasicExecutionRole" in deploy
    assert "--aws-sigv4" in deploy and "This model's task is `tensor`" in deploy
    payload = re.search(r"--payload ('[^']*')", deploy)
    assert payload is not None
    assert json.loads(shlex.split(payload.group(1))[0]) == {"inputs": {"x": [[0] * 16]}}


def test_package_tracing_flag(tiny_onnx: Path, tmp_path: Path) -> None:
    """`--tracing` reaches the template (Tracing: Active) and DEPLOY.md's CLI route; off by default; Lambda only."""
    on = run_cli("package", str(tiny_onnx), "--target", "lambda", "-o", str(tmp_path / "on"), "--no-check", "--tracing")
    assert on.returncode == 0, on.stderr
    assert "Tracing: Active" in (tmp_path / "on" / "template.yaml").read_text()
    assert "--tracing-config Mode=Active" in (tmp_path / "on" / "DEPLOY.md").read_text()
    off = run_cli("package", str(tiny_onnx), "--target", "lambda", "-o", str(tmp_path / "off"), "--no-check")
    assert off.returncode == 0, off.stderr
    assert "Tracing" not in (tmp_path / "off" / "template.yaml").read_text()
    wrong = run_cli("package", str(tiny_onnx), "--target", "container", "-o", str(tmp_path / "c"), "--tracing")
    assert wrong.returncode == 2 and "--tracing applies only to --target lambda" in wrong.stderr
