"""`package --target azure-functions`: the Flex Consumption function.zip, called through the real
`azure-functions` library the way the Functions host's Python worker calls it.

The zip is unpacked and `function_app` imported in a fresh, isolated python3.12 (`-I -S`) whose path is the
unpacked app, its `.python_packages/lib/site-packages` and the `azure-functions` library with werkzeug and
markupsafe (what the Python worker provides in Azure; taken from this venv, nothing else from it: torch,
transformers and slimserve must not be importable there). The functions are found with the library's own
`app.get_functions()` and called with `func.HttpRequest`s. Answers are compared with onnxruntime on the
original ONNX file and with sentence-transformers on the original MiniLM, never with slimserve's code.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimserve.bundle import load_bundle
from slimserve.packagers.azure_functions import SITE_DIR, package_azure
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.target import Target
from tests.conftest import assert_clean_error, require, run_cli
from tests.helpers_lambda import tensor_model_dir

PYTHON = "3.12"
MAX_BODY = 4096  # SLIMSERVE_MAX_BODY_BYTES in the function's process, so an oversized body is cheap to send

# Runs inside the isolated interpreter: argv = app dir, host library dir; stdin = the requests.
_RUNNER = r"""
import importlib.util, json, sys, types
app_dir, host = sys.argv[1], sys.argv[2]
sys.path[:0] = [app_dir, app_dir + "/.python_packages/lib/site-packages", host]
import azure.functions as func
import function_app

functions = {}
for function in function_app.app.get_functions():
    (trigger,) = [b for b in json.loads(function.get_function_json())["bindings"] if b["type"] == "httpTrigger"]
    functions[function.get_function_name()] = (function, trigger)
out = []
for n, item in enumerate(json.loads(sys.stdin.read())):
    function, _ = functions[item["function"]]
    body = item["body"].encode() if item.get("body") is not None else bytes.fromhex(item.get("hex", ""))
    req = func.HttpRequest(method=item["method"], url="https://app.azurewebsites.net/api/" + item["function"],
                           headers=item.get("headers") or {}, body=body)
    context = types.SimpleNamespace(invocation_id=f"inv-{n}")
    response = function.get_user_function()(req, context)
    assert isinstance(response, func.HttpResponse), type(response)
    out.append({"status": response.status_code, "mimetype": response.mimetype,
                "headers": dict(response.headers), "body": response.get_body().decode()})
print("RESULT:" + json.dumps({
    "responses": out,
    "triggers": {name: trigger for name, (_, trigger) in functions.items()},
    "importable": {m: importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "slimserve")},
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "slimserve", "onnx")),
}))
"""


def host_library(folder: Path) -> Path:
    """What the Functions Python worker provides: azure-functions and its dependencies (links into this venv)."""
    import azure.functions
    import markupsafe
    import werkzeug

    folder.mkdir(parents=True, exist_ok=True)
    for package in (Path(azure.functions.__file__).parent.parent, Path(werkzeug.__file__).parent,
                    Path(markupsafe.__file__).parent):
        (folder / package.name).symlink_to(package, target_is_directory=True)
    return folder


def call_function(pkg: Path, work: Path, requests: list[dict[str, Any]],
                  max_body: int | None = MAX_BODY) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Unzip function.zip, import function_app in an isolated python3.12, call the requests; returns the
    result and the JSON log lines the runtime printed. `max_body`: SLIMSERVE_MAX_BODY_BYTES (None: unset)."""
    exe = find_python(PYTHON)
    require(exe, f"python{PYTHON} (pyenv install {PYTHON})")
    app = work / "wwwroot"
    with zipfile.ZipFile(pkg / "function.zip") as zf:
        zf.extractall(app)
    host = host_library(work / "host")
    proc = subprocess.run([str(exe), "-I", "-S", "-c", _RUNNER, str(app), str(host)], input=json.dumps(requests),
                          capture_output=True, text=True, cwd=work, timeout=300, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1",
                               **({"SLIMSERVE_MAX_BODY_BYTES": str(max_body)} if max_body else {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    result = json.loads(next(ln for ln in lines if ln.startswith("RESULT:"))[len("RESULT:"):])
    logs = [json.loads(ln) for ln in lines if ln.startswith("{")]
    return result, logs


def post(body: Any, **headers: str) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"function": "predict", "method": "POST", "body": text,
            "headers": {"content-type": "application/json", **headers}}


HEALTH = {"function": "health", "method": "GET", "body": ""}


@pytest.fixture(scope="module")
def tensor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tensor_model_dir(tmp_path_factory.mktemp("az-tensor") / "model", max_batch=8)


@pytest.fixture(scope="module")
def tensor_pkg(tensor_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("az-pkg") / "out"
    package_azure(load_bundle(tensor_dir), out, Target(PYTHON), memory_mb=512)
    return out


def test_the_zip_is_a_v2_function_app_with_its_dependencies_and_no_host_library(tensor_pkg: Path) -> None:
    assert sorted(p.name for p in tensor_pkg.iterdir()) == [".slimserve-output", "DEPLOY.md", "function.zip",
                                                            "slimserve.json"]
    with zipfile.ZipFile(tensor_pkg / "function.zip") as zf:
        names = set(zf.namelist())
        host = json.loads(zf.read("host.json"))
        requirements = zf.read("requirements.txt").decode()
        entry = zf.read("function_app.py").decode()
    assert {"function_app.py", "host.json", "requirements.txt", "lambda_handler.py", "model_runtime.py",
            "model/model.onnx", "model/slimserve.json"} <= names
    site = SITE_DIR + "/"
    assert any(n.startswith(site + "numpy/") for n in names) and any(n.startswith(site + "onnxruntime/") for n in names)
    tops = {n[len(site):].split("/")[0] for n in names if n.startswith(site) and n != site}
    assert not {"torch", "transformers", "azure", "werkzeug", "slimserve", "tokenizers"} & tops
    assert host["version"] == "2.0" and re.fullmatch(r"\d\d:\d\d:\d\d", host["functionTimeout"])
    assert "extensionBundle" not in host  # HTTP is built into the host
    pins = [ln for ln in requirements.splitlines() if ln and not ln.startswith("#")]
    assert pins and all("==" in p for p in pins) and any(p.startswith("onnxruntime==") for p in pins)
    assert "func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)" in entry
    manifest = json.loads((tensor_pkg / "slimserve.json").read_text())
    package = manifest["package"]
    assert package["target"] == "azure-functions" and package["platform"] == "azure-functions-flex"
    assert package["python"] == PYTHON and package["memory_mb"] == 512 and "checks" not in package
    data = (tensor_pkg / "function.zip").read_bytes()
    (artifact,) = package["artifacts"]
    assert artifact["bytes"] == len(data) and artifact["sha256"] == hashlib.sha256(data).hexdigest()


def test_two_runs_give_byte_identical_zips(tensor_dir: Path, tensor_pkg: Path, tmp_path: Path) -> None:
    package_azure(load_bundle(tensor_dir), tmp_path / "again", Target(PYTHON), memory_mb=512)
    assert (tmp_path / "again" / "function.zip").read_bytes() == (tensor_pkg / "function.zip").read_bytes()


def test_the_function_answers_like_onnxruntime_on_the_original_model(tensor_dir: Path, tensor_pkg: Path,
                                                                      tmp_path: Path) -> None:
    import onnxruntime as ort

    rows = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    session = ort.InferenceSession(str(tensor_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": rows})
    requests = [
        post({"inputs": {"x": rows.tolist()}}),
        HEALTH,
        post("{not json"),
        post({"input": [1]}),
        post({"inputs": {"x": [[0.0] * 16] * 9}}),  # over max_batch 8
        post({"inputs": {"x": [[0.0] * 16]}, "pad": "x" * MAX_BODY}),  # body over SLIMSERVE_MAX_BODY_BYTES
        post("<html/>", **{"content-type": "text/html"}),
        {"function": "predict", "method": "POST", "body": "", "headers": {}},
        {"function": "chat_completions", "method": "POST", "body": json.dumps({"messages": []}), "headers": {}},
    ]
    result, logs = call_function(tensor_pkg, tmp_path, requests)
    assert result["importable"] == {"torch": False, "transformers": False, "slimserve": False}
    assert result["modules"] == []
    triggers = result["triggers"]
    assert triggers["predict"]["route"] == "predict" and triggers["predict"]["methods"] == ["POST"]
    assert triggers["health"]["route"] == "health" and triggers["health"]["methods"] == ["GET"]
    assert {t["authLevel"] for t in triggers.values()} == {"FUNCTION"}

    ok, health, bad_json, bad_field, over_batch, over_body, html, empty, chat = result["responses"]
    assert triggers["chat_completions"]["route"] == "v1/chat/completions"
    assert chat["status"] == 404  # chat completions are for text-generation models
    assert ok["status"] == 200 and ok["mimetype"] == "application/json"
    np.testing.assert_allclose(np.array(json.loads(ok["body"])["outputs"]["y"]), expected, rtol=1e-5, atol=1e-5)
    assert health["status"] == 200 and json.loads(health["body"])["status"] == "ok"
    assert json.loads(health["body"])["limits"]["max_batch"] == 8
    for answer, status, words in ((bad_json, 400, "not valid JSON"), (bad_field, 400, "missing field"),
                                  (over_batch, 413, "8"), (over_body, 413, "SLIMSERVE_MAX_BODY_BYTES"),
                                  (html, 400, "Content-Type"), (empty, 400, "empty request body"),
                                  (chat, 404, "no route")):
        assert answer["status"] == status, answer
        error = json.loads(answer["body"])
        assert set(error) == {"error"} and words in error["error"], error

    # the shared runtime's JSON log lines: one at init, one per request with the invocation id
    assert logs[0]["event"] == "init" and logs[0]["task"] == "tensor"
    lines = [line for line in logs if line.get("event") == "request"]
    assert [line["request_id"] for line in lines] == [f"inv-{n}" for n in range(len(requests))]
    assert [line["status"] for line in lines] == [r["status"] for r in result["responses"]]
    assert [line["route"] for line in lines][:2] == ["POST /predict", "GET /health"]


def test_the_cli_deploys_with_the_memory_and_timeout_check_measured(tensor_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    result = run_cli("package", str(tensor_dir), "--target", "azure-functions", "-o", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    checks = json.loads((out / "slimserve.json").read_text())["package"]["checks"]
    assert summary["fits"] is True and checks["platform"] == "azure-functions-flex"
    memory = {f["id"]: f for f in checks["checks"]}["memory"]
    assert memory["status"] == "pass" and memory["limit"] == summary["memory_mb"] == checks["recommended_memory_mb"]
    assert summary["timeout_s"] == checks["recommended_timeout_s"] >= 10
    deploy = (out / "DEPLOY.md").read_text()
    assert re.search(rf"--instance-memory {summary['memory_mb']}\b", deploy)
    assert f"`functionTimeout` {summary['timeout_s']} s" in deploy and "peak RSS" in deploy


@pytest.mark.parametrize(("args", "message"), [
    (("--snapstart",), "--snapstart/--no-snapstart apply only to --target lambda"),
    (("--arch", "arm64"), "runs on x86_64 only"),
    (("--memory", "1024"), "not a Flex Consumption instance size"),
    (("--python", "3.14"), "Python"),
    (("--base", "python:3.12"), "--base applies only to --target container"),
])
def test_options_that_do_not_apply_are_refused(tensor_dir: Path, tmp_path: Path, args: tuple[str, ...],
                                               message: str) -> None:
    result = run_cli("package", str(tensor_dir), "--target", "azure-functions", "-o", str(tmp_path / "out"),
                     "--no-check", *args)
    assert_clean_error(result, contains=message)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_minilm_through_the_cli_matches_sentence_transformers(minilm_fp32: Path, minilm_dir: Path,
                                                              tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "pkg"
    result = run_cli("package", str(minilm_fp32), "--target", "azure-functions", "-o", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["fits"] is True and summary["python"] == PYTHON
    manifest = json.loads((out / "slimserve.json").read_text())
    checks = manifest["package"]["checks"]
    # the instance memory and timeout DEPLOY.md deploys with are the ones the check measured
    assert checks["platform"] == "azure-functions-flex"
    assert summary["memory_mb"] == checks["recommended_memory_mb"] == manifest["package"]["memory_mb"]
    assert summary["timeout_s"] == checks["recommended_timeout_s"]
    deploy = (out / "DEPLOY.md").read_text()
    assert f"--instance-memory {summary['memory_mb']}" in deploy and f"--runtime-version {PYTHON}" in deploy
    assert "--flexconsumption-location" in deploy and "config-zip" in deploy and "x-functions-key" in deploy
    with zipfile.ZipFile(out / "function.zip") as zf:
        host = json.loads(zf.read("host.json"))
        assert any(n.startswith(SITE_DIR + "/tokenizers/") for n in zf.namelist())
    timeout = summary["timeout_s"]
    assert host["functionTimeout"] == f"{timeout // 3600:02d}:{timeout % 3600 // 60:02d}:{timeout % 60:02d}"

    texts = ["Serverless models start fast.", "A longer sentence, with punctuation; and more words in it!"]
    responses, logs = call_function(out, tmp_path / "run", [
        post({"inputs": texts}), post({"inputs": ["x"] * 10_000}), post({"inputs": [1, 2]}), HEALTH],
        max_body=None)
    ok, too_many, not_texts, health = responses["responses"]
    assert responses["importable"] == {"torch": False, "transformers": False, "slimserve": False}
    assert ok["status"] == 200, ok
    got = np.array(json.loads(ok["body"])["embeddings"])
    model = SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)
    expected = model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert too_many["status"] == 413 and "SLIMSERVE_MAX_BATCH" in json.loads(too_many["body"])["error"]
    assert not_texts["status"] == 400 and "error" in json.loads(not_texts["body"])
    assert health["status"] == 200 and json.loads(health["body"])["task"] == "feature-extraction"
    assert [line["status"] for line in logs if line.get("event") == "request"] == [200, 413, 400, 200]


def _vit_folder(folder: Path) -> Path:
    """A tiny random ViT image classifier (a second family: the closure carries Pillow instead of tokenizers),
    its head scaled so the top label is decisive rather than a tie on noise."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    labels = ["cat", "dog", "bird", "fish"]
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={label: i for i, label in enumerate(labels)})
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_an_image_classifier_takes_a_raw_jpeg_body_like_the_transformers_pipeline(tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    folder = _vit_folder(tmp_path / "vit")
    optimized = tmp_path / "vit-fp32"
    result = run_cli("optimize", str(folder), "-o", str(optimized), "--recipe", "fp32")
    assert result.returncode == 0, result.stderr
    result = run_cli("package", str(optimized), "--target", "azure-functions", "-o", str(tmp_path / "pkg"),
                     "--no-check")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "pkg" / "function.zip") as zf:
        assert any(n.startswith(SITE_DIR + "/PIL/") for n in zf.namelist())

    pixels = np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    raw = {"function": "predict", "method": "POST", "hex": jpeg.hex(), "headers": {"content-type": "image/jpeg"}}
    as_json = post({"inputs": [base64.b64encode(jpeg).decode()], "parameters": {"top_k": 2}})
    text = {"function": "predict", "method": "POST", "hex": b"plain words".hex(),
            "headers": {"content-type": "application/octet-stream"}}
    answers, _ = call_function(tmp_path / "pkg", tmp_path / "run", [raw, as_json, text], max_body=None)
    got_raw, got_json, not_image = answers["responses"]
    assert got_raw["status"] == 200 and got_json["status"] == 200, (got_raw, got_json)

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder, use_fast=False)
    pipe = pipeline("image-classification", model=model, image_processor=processor, device="cpu")
    image = Image.open(io.BytesIO(jpeg))
    for ours, theirs in ((json.loads(got_raw["body"]), pipe(image)),
                         (json.loads(got_json["body"])[0], pipe(image, top_k=2))):
        assert [o["label"] for o in ours] == [t["label"] for t in theirs], (ours, theirs)
        np.testing.assert_allclose([o["score"] for o in ours], [t["score"] for t in theirs], atol=1e-4)
    assert not_image["status"] == 400 and "error" in json.loads(not_image["body"])
