"""Cold start: fresh -I -S interpreters that see only the deployed files; medians; fallback said aloud."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimserve.bundle import load_bundle
from slimserve.errors import ToolError
from slimserve.measure.coldstart import cold_start_for_bundle, measure_cold_start, sample_event, worst_event
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.target import Target
from tests.conftest import require
from tests.helpers_lambda import tensor_model_dir, text_model_dir


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_bundle(tensor_model_dir(tmp_path_factory.mktemp("cold") / "model"))


def test_sample_event_follows_the_manifest(bundle) -> None:  # type: ignore[no-untyped-def]
    event = sample_event(bundle.manifest.to_dict())
    assert len(event["inputs"]["x"]) == 1 and len(event["inputs"]["x"][0]) == 16
    assert sample_event({"runtime": {"kind": "text"}})["inputs"][0]


def test_worst_event_is_the_largest_request_the_limits_accept(tmp_path: Path) -> None:
    tensor = worst_event(load_bundle(tensor_model_dir(tmp_path / "t", max_batch=8)).manifest.to_dict())
    assert len(tensor.event["inputs"]["x"]) == 8 and len(tensor.event["inputs"]["x"][0]) == 16
    manifest = load_bundle(text_model_dir(tmp_path / "s", max_batch=4, max_chars=200)).manifest.to_dict()
    text = worst_event(manifest)
    assert [len(t) for t in text.event["inputs"]] == [200] * 4  # budget 4,096 tokens ≫ 4 × 16
    manifest["runtime"]["max_tokens"] = 40  # 2 texts at the full 16 tokens
    assert len(worst_event(manifest).event["inputs"]) == 2
    tensor_manifest = load_bundle(tmp_path / "t").manifest.to_dict()
    tensor_manifest["runtime"] = {**tensor_manifest["runtime"], "max_elements": 50}
    assert len(worst_event(tensor_manifest).event["inputs"]["x"]) == 3  # 3 rows × 16 ≤ 50


def test_cold_start_on_the_target_python(bundle) -> None:  # type: ignore[no-untyped-def]
    require(find_python("3.12"), "python3.12 (pyenv install 3.12)")
    cold = cold_start_for_bundle(bundle, Target("3.12"), runs=3, warm_runs=5)
    assert cold.python == "3.12" and cold.fallback is None and cold.runs == 3 and cold.cpus == 1
    assert cold.worst_ms is not None and cold.worst_ms > 0 and cold.worst_request == "8 rows × 16 numbers"
    assert cold.worst_peak_rss_mb is not None and cold.max_rss_mb == cold.worst_peak_rss_mb >= cold.peak_rss_mb
    assert all(len(v) == 3 for v in cold.samples.values()) and "worst_ms" in cold.samples
    assert cold.import_ms > 10 and cold.load_ms > 0 and cold.first_inference_ms > 0
    assert cold.total_ms == pytest.approx(sorted(cold.samples["total_ms"])[1])
    assert 20 < cold.peak_rss_mb < 1000


def test_missing_interpreter_or_foreign_arch_falls_back_and_says_so(bundle) -> None:  # type: ignore[no-untyped-def]
    cold = cold_start_for_bundle(bundle, Target("3.14", "arm64"), runs=1, warm_runs=1)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if find_python("3.14") is None:
        assert cold.python == here and "python3.14 is not installed" in (cold.fallback or "")
    assert "arm64 cannot run here" in (cold.fallback or "")


def test_the_probe_sees_only_the_given_paths(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a path without the runtime libraries fails loudly instead of borrowing the dev venv's numpy
    task = tmp_path / "task"
    task.mkdir()
    from slimserve.runtime import RUNTIME_DIR, handler_modules

    for name in handler_modules("lambda_handler.py"):
        (task / name).write_text((RUNTIME_DIR / name).read_text())
    with pytest.raises(ToolError, match="No module named 'numpy'"):
        measure_cold_start([task], bundle.root, f"{sys.version_info.major}.{sys.version_info.minor}",
                           sample_event(bundle.manifest.to_dict()), runs=1, executable=Path(sys.executable))


def test_agrees_with_an_independent_fresh_process(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Within 2x of a plain `time python -c 'import lambda_handler; handler(...)'` run of the same files."""
    require(find_python("3.12"), "python3.12 (pyenv install 3.12)")
    import zipfile

    from slimserve.packagers.lambda_target import package_lambda

    package_lambda(bundle, tmp_path / "out", Target("3.12"), memory_mb=512)
    for name, dest in (("layer.zip", "opt"), ("function.zip", "task")):
        with zipfile.ZipFile(tmp_path / "out" / name) as zf:
            zf.extractall(tmp_path / dest)
    # on one CPU, as the probe runs (see measure.coldstart): the projection onto the platform starts from it
    code = ("import os, sys, json, time; os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1]);"
            "sys.path[:0] = [sys.argv[1], sys.argv[2]]; t = time.perf_counter();"
            "import lambda_handler; lambda_handler.handler(json.loads(sys.argv[3]));"
            "print((time.perf_counter() - t) * 1000)")
    event = json.dumps(sample_event(bundle.manifest.to_dict()))
    plain = sorted(float(subprocess.run([str(find_python("3.12")), "-I", "-S", "-c", code, str(tmp_path / "task"),
                                         str(tmp_path / "opt" / "python"), event], capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])  # after the handler's log lines
                   for _ in range(3))[1]
    ours = cold_start_for_bundle(bundle, Target("3.12"), runs=3, warm_runs=1).total_ms
    assert plain / 2 < ours < plain * 2, (plain, ours)
