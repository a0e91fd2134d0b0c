"""int8-resident (int8 weights kept int8 in memory), `int8` choosing by priority and target CPU, and the
manifest's record of the instruction set fidelity was measured on.

References are independent of slimserve: numpy for a hand-built ONNX graph, the PyTorch model (transformers)
for tiny random BERT / DistilBERT, sentence-transformers for MiniLM, and /proc/cpuinfo read here for the
CPU. Memory is a fresh process's peak RSS from the kernel (rusage of that child).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slimserve.optimizer import isa
from slimserve.optimizer.step_cache import run_step
from slimserve.optimizer.steps import int8_auto, int8_weight
from slimserve.optimizer.steps.base import StepContext
from tests.conftest import assert_clean_error, build_tiny_onnx, run_cli

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TEXTS = ["A cold start loads the model once.", "int8 weights stay int8 in memory",
         "The quick brown fox jumps over the lazy dog, twice, before breakfast."]


# -- the CPU ----------------------------------------------------------------------------------------------
GRAVITON2 = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 " \
            "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU part\t: 0xd0c\n"
GRAVITON3 = GRAVITON2.replace("asimddp ssbs", "asimddp sha512 sve asimdfhm i8mm bf16 ssbs")
EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7R32\nflags\t\t: fpu sse4_2 avx avx2 fma bmi2\n"


def test_the_cpu_is_named_by_its_integer_instructions() -> None:
    assert isa.detect(EPYC_AVX2, "x86_64").isa == "x86-64-avx2"
    assert isa.detect(EPYC_AVX2.replace("avx2", "avx2 avx512f avx512_vnni"), "x86_64").isa == "x86-64-avx512-vnni"
    assert isa.detect(EPYC_AVX2.replace("avx2", "avx2 avx_vnni"), "x86_64").isa == "x86-64-avx-vnni"
    assert isa.detect(EPYC_AVX2.replace("avx2", "avx2 avx512_vnni amx_tile amx_int8"), "x86_64").isa == "x86-64-amx"
    assert isa.detect(GRAVITON2, "aarch64").isa == "arm64-dotprod"
    assert isa.detect(GRAVITON3, "aarch64").isa == "arm64-i8mm"
    assert isa.detect(GRAVITON2.replace(" asimddp", ""), "aarch64").isa == "arm64"
    assert isa.detect(EPYC_AVX2, "x86_64").as_dict() == {"measured_on": "x86-64-avx2", "flags": ["avx2"],
                                                          "cpu": "AMD EPYC 7R32"}
    # The default target is the architecture's floor, never the build machine's extensions.
    assert isa.default_target("x86_64") == "x86-64-avx2" and isa.default_target("aarch64") == "arm64"
    assert isa.platform_target("x86_64") == "x86-64-avx2" and isa.platform_target("arm64") == "arm64-dotprod"


def test_this_machine_is_detected_from_its_flags() -> None:
    """Against /proc/cpuinfo read here: the first processor's flags decide."""
    text = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    here = isa.detect()
    if os.uname().machine == "x86_64":
        expected = ("x86-64-amx" if "amx_int8" in flags else "x86-64-avx512-vnni" if "avx512_vnni" in flags
                    else "x86-64-avx-vnni" if "avx_vnni" in flags else "x86-64-avx2" if "avx2" in flags else "x86-64")
    else:
        expected = "arm64-i8mm" if "i8mm" in flags else "arm64-dotprod" if "asimddp" in flags else "arm64"
    assert here.isa == expected and set(here.flags) <= flags


def test_which_recipes_depend_on_the_cpu() -> None:
    """Integer matmuls (int8-dynamic/static, MatMulNBits accuracy level 4) do; float compute does not."""
    def rec(step: str, options: dict[str, Any] | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"step": step, "options": options or {}, "details": details or {}}

    assert isa.dependent_steps([rec("int8-dynamic"), rec("int8-static"), rec("fp32"), rec("fp16"),
                                rec("int8-weight", {"matmul": "fold", "accuracy_level": 0})]) == \
        ["int8-dynamic", "int8-static"]
    assert isa.dependent_steps([rec("int8", {}, {"delegate": "int8-dynamic"}),
                                rec("int8-resident(cpu=arm64)", {"cpu": "arm64"}, {"accuracy_level": 4}),
                                rec("int8-resident", {}, {"accuracy_level": 0}),
                                rec("int4-weight", {"accuracy_level": 4})]) == \
        ["int8", "int8-resident(cpu=arm64)", "int4-weight"]
    section, notes = isa.record([rec("int8-dynamic")], "arm64-i8mm", isa.detect(EPYC_AVX2, "x86_64"))
    assert section["measured_on"] == "x86-64-avx2" and section["target"] == "arm64-i8mm" and section["depends_on_isa"]
    assert len(notes) == 1 and isa.is_warning(notes[0]) and "int8-dynamic" in notes[0]
    assert isa.record([rec("int8-dynamic")], "x86-64-avx2", isa.detect(EPYC_AVX2, "x86_64"))[1] == []
    assert isa.record([rec("int8-weight")], "arm64-i8mm", isa.detect(EPYC_AVX2, "x86_64"))[1] == []


# -- int8-resident and int8(priority=...) on a hand-built graph ---------------------------------------------
def _numpy_reference(model_path: Path, x: np.ndarray) -> np.ndarray:
    """y = relu(x @ w1 + b1) @ w2 + b2 from the float initializers, in numpy."""
    w = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(model_path)).graph.initializer}
    return np.asarray(np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"])


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


def _nbits(path: Path) -> list[dict[str, int]]:
    return [{a.name: a.i for a in n.attribute if a.name in ("bits", "accuracy_level", "block_size")}
            for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("tiny")
    x = np.random.default_rng(1).standard_normal((16, 128)).astype(np.float32)
    return build_tiny_onnx(root / "tiny.onnx", hidden=128, out=4), x


@pytest.mark.parametrize(("target", "level"), [("x86-64-avx2", 0), ("x86-64-avx512-vnni", 4), ("arm64-dotprod", 4),
                                               ("arm64", 0)])
def test_int8_resident_keeps_matmul_weights_int8_at_the_targets_level(
        tiny: tuple[Path, np.ndarray], tmp_path: Path, target: str, level: int) -> None:
    src, x = tiny
    opts = int8_weight.Int8ResidentOptions(cpu=target)  # type: ignore[arg-type]
    result = int8_weight.RESIDENT_SPEC.run(src, tmp_path / "out.onnx", StepContext(work_dir=tmp_path), opts)
    assert _nbits(result.path) == [{"bits": 8, "accuracy_level": level, "block_size": 32}]  # w1: 128x32
    floats = [t for t in onnx.load(str(result.path)).graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) >= 4096]
    assert floats == [], "a float copy of a large weight is left"
    assert result.details["accuracy_level"] == level and result.details["cpu"] == target
    ref, got = _numpy_reference(src, x), _run(result.path, x)
    assert np.abs(got - ref).max() / np.abs(ref).max() < (0.01 if level == 0 else 0.03)


def test_missing_and_garbage_inputs_are_one_line_errors(tmp_path: Path) -> None:
    from slimserve.errors import SlimserveError, ToolError

    ctx = StepContext(work_dir=tmp_path)
    with pytest.raises(SlimserveError):
        int8_weight.RESIDENT_SPEC.run(tmp_path / "absent.onnx", tmp_path / "o1.onnx", ctx,
                                      int8_weight.Int8ResidentOptions())
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf")
    with pytest.raises(ToolError) as info:
        int8_weight.RESIDENT_SPEC.run(junk, tmp_path / "o2.onnx", ctx, int8_weight.Int8ResidentOptions())
    assert "\n" not in info.value.message


def test_int8_chooses_by_priority_and_target(tiny: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    src, x = tiny
    feeds = [{"x": x[i:i + 4]} for i in range(0, 16, 4)]

    def build(priority: str, cpu: str | None) -> Any:
        work = tmp_path / f"{priority}-{cpu}"
        work.mkdir()
        opts = int8_auto.Int8Options(priority=priority, cpu=cpu)  # type: ignore[arg-type]
        return run_step(int8_auto.SPEC, opts, src, work / "out" / "model.onnx",
                        StepContext(work_dir=work, calibration=feeds))

    memory_avx2 = build("memory", "x86-64-avx2")
    assert memory_avx2.details["delegate"] == "int8-resident" and _nbits(memory_avx2.path)[0]["accuracy_level"] == 0
    memory_vnni = build("memory", "x86-64-avx512-vnni")
    assert memory_vnni.details["delegate"] == "int8-resident" and _nbits(memory_vnni.path)[0]["accuracy_level"] == 4
    latency = build("latency", "x86-64-avx2")  # no integer dot products: int8-dynamic
    assert latency.details["delegate"] == "int8-dynamic"
    assert {n.op_type for n in onnx.load(str(latency.path)).graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul"}
    latency_dot = build("latency", "arm64-i8mm")
    assert latency_dot.details["delegate"] == "int8-resident" and _nbits(latency_dot.path)[0]["accuracy_level"] == 4
    fidelity = build("fidelity", "arm64-i8mm")
    assert set(fidelity.details["candidates"]) == {"int8-weight", "int8-dynamic"}
    ref = _numpy_reference(src, x)
    for result in (memory_avx2, memory_vnni, latency, latency_dot, fidelity):
        got = _run(result.path, x)
        assert np.abs(got - ref).max() / np.abs(ref).max() < 0.05, result.details["delegate"]


def test_int8_keeps_a_large_models_weights_resident(tiny: tuple[Path, np.ndarray], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Fidelity first, but a model whose float32 weights are over the threshold (1 GiB: language models)
    is not widened back to float32 at load: int8 takes int8-resident, saying why. (The threshold is lowered
    to this tiny model's size; the choice is the step's own.)"""
    src, x = tiny
    monkeypatch.setattr(int8_auto, "RESIDENT_ABOVE_BYTES", src.stat().st_size - 1)
    result = run_step(int8_auto.SPEC, int8_auto.Int8Options(cpu="x86-64-avx2"), src, tmp_path / "out" / "model.onnx",
                      StepContext(work_dir=tmp_path, calibration=[{"x": x[:4]}]))
    # Level 4 even on plain AVX2: at level 0 a token-by-token decode dequantizes every weight per call.
    assert result.details["delegate"] == "int8-resident" and _nbits(result.path)[0]["accuracy_level"] == 4
    assert any("would widen them back to float32" in note and "accuracy level 4" in note for note in result.notes)
    assert np.abs(_run(result.path, x) - _numpy_reference(src, x)).max() < 0.05 * np.abs(_numpy_reference(src, x)).max()


# -- through the CLI, on two real architectures -------------------------------------------------------------
def _tiny_folder(folder: Path, minilm_dir: Path, arch: str) -> Path:
    import torch
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    if arch == "bert":
        model: Any = BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=256, max_position_embeddings=128))
    else:
        model = DistilBertModel(DistilBertConfig(vocab_size=30522, dim=64, hidden_dim=256, n_layers=2, n_heads=4,
                                                 max_position_embeddings=128))
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, folder / name)
    return folder


def _torch_hidden(folder: Path, texts: list[str]) -> list[np.ndarray]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tok(text, return_tensors="pt")
            feed = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}  # DistilBERT: no types
            out.append(model(**feed).last_hidden_state[0].numpy())
    return out


def _onnx_hidden(folder: Path, texts: list[str]) -> list[np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out = []
    for text in texts:
        e = tok.encode(text)
        feed = {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
                "token_type_ids": np.array([e.type_ids])}
        out.append(sess.run(None, {k: v for k, v in feed.items() if k in names})[0][0])
    return out


@pytest.mark.parametrize(("arch", "cpu", "level"), [("bert", "x86-64-avx2", 0), ("distilbert", "arm64-i8mm", 4)])
def test_optimize_cpu_builds_int8_resident_for_the_target_and_records_where_fidelity_was_measured(
        tmp_path: Path, minilm_dir: Path, arch: str, cpu: str, level: int) -> None:
    folder = _tiny_folder(tmp_path / "model", minilm_dir, arch)
    out = tmp_path / "out"
    result = run_cli("optimize", str(folder), "-o", str(out), "--recipe", "int8(priority=memory)", "--cpu", cpu,
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    step = manifest["steps"][0]
    assert step["step"] == f"int8(priority=memory,cpu={cpu})" and step["details"]["delegate"] == "int8-resident"
    assert {n["accuracy_level"] for n in _nbits(out / "model.onnx")} == {level}
    here = isa.detect()
    assert manifest["fidelity"]["isa"] == {**here.as_dict(), "target": cpu, "depends_on_isa": level == 4}
    warned = level == 4 and here.isa != cpu  # integer activations, measured on another instruction set
    assert ("warning: fidelity was measured on" in result.stderr) == warned, result.stderr
    assert any(isa.is_warning(n) for n in manifest["notes"]) == warned
    # Against the PyTorch model: every token's hidden state.
    for ref, got in zip(_torch_hidden(folder, TEXTS), _onnx_hidden(out, TEXTS)):
        cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
        assert cos.min() > (0.999 if level == 0 else 0.99), cos.min()


def test_an_unknown_cpu_is_refused_with_the_targets(tiny: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    bad = run_cli("optimize", str(tiny[0]), "-o", str(tmp_path / "o"), "--recipe", "int8-resident(cpu=x86-64-avx3)")
    assert_clean_error(bad, contains="x86-64-avx2")
    bad = run_cli("optimize", str(tiny[0]), "-o", str(tmp_path / "o"), "--cpu", "graviton")
    assert bad.returncode == 2 and "x86-64-avx512-vnni" in bad.stderr and "Traceback" not in bad.stderr


# -- MiniLM: the goal -------------------------------------------------------------------------------
_PEAK = r"""
import sys, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
folder = sys.argv[1]
tok = Tokenizer.from_file(folder + "/tokenizer.json")
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(folder + "/model.onnx", o, providers=["CPUExecutionProvider"])
e = tok.encode("hello world")
feed = {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]), "token_type_ids": np.array([e.type_ids])}
names = {i.name for i in s.get_inputs()}
s.run(None, {k: v for k, v in feed.items() if k in names})
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def _peak_rss_mb(folder: Path) -> float:
    """The kernel's high-water mark of a fresh process that loads the model and runs it once (VmHWM: it
    restarts at exec, unlike a child's ru_maxrss, which counts the parent's pages shared before exec)."""
    result = subprocess.run([sys.executable, "-I", "-c", _PEAK, str(folder)], capture_output=True, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1]) / 1024


def _as_deployed(folder: Path, dst: Path) -> Path:
    """The model folder as every packager ships it (packagers/model_files.py: weights in external data,
    memory-mapped by onnxruntime), which is what a deployment's peak RSS is made of."""
    from slimserve.bundle import load_bundle
    from slimserve.packagers.model_files import model_entries
    from slimserve.packagers.reproducible import write_tree

    return write_tree(model_entries(load_bundle(folder)), dst)


def test_minilm_int8_resident_is_faithful_in_half_the_memory(minilm_candidate: Callable[[str], Path],
                                                            minilm_int8: Path, minilm_dir: Path,
                                                            tmp_path: Path) -> None:
    """The issue's goal: an int8 MiniLM with mean cosine >= 0.999 on held-out text and peak RSS <= 110 MB,
    measured on the folder as it ships (both layouts are measured: the goal must hold for the shipped one,
    and int8-resident must keep well under int8-weight in either)."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    resident = minilm_candidate("int8-resident(cpu=x86-64-avx2)")
    texts = [json.loads(line)["text"] for line in
             (Path(__file__).parent / "data" / "heldout_eval.jsonl").read_text().splitlines() if line.strip()][::6]
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, normalize_embeddings=True)
    tok = Tokenizer.from_file(str(resident / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.no_padding()
    sess = ort.InferenceSession(str(resident / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    cos = []
    for text, r in zip(texts, ref):
        e = tok.encode(text)
        feed = {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
                "token_type_ids": np.array([e.type_ids])}
        v = sess.run(None, {k: v for k, v in feed.items() if k in names})[0][0].mean(0)
        cos.append(float(v @ r / np.linalg.norm(v)))
    assert np.mean(cos) >= 0.999 and min(cos) >= 0.995, (np.mean(cos), min(cos))
    shipped = _peak_rss_mb(_as_deployed(resident, tmp_path / "resident"))
    weight = _peak_rss_mb(_as_deployed(minilm_int8, tmp_path / "weight"))
    assert shipped <= 110 and shipped <= 0.7 * weight, (shipped, weight)
    weight_inline, kept_inline = _peak_rss_mb(minilm_int8), _peak_rss_mb(resident)
    assert kept_inline <= 0.7 * weight_inline, (kept_inline, weight_inline)


@pytest.mark.slow
def test_minilm_int8_resident_answers_in_a_lambda_package_like_sentence_transformers(
        minilm_candidate: Callable[[str], Path], minilm_dir: Path, tmp_path: Path) -> None:
    """The shipped handler (python3.12 -I -S, only the layer and function zips) runs MatMulNBits: the
    embeddings it answers agree with sentence-transformers on the PyTorch model."""
    from sentence_transformers import SentenceTransformer

    from tests.helpers_lambda import run_like_lambda

    resident = minilm_candidate("int8-resident(cpu=x86-64-avx2)")
    out = tmp_path / "pkg"
    result = run_cli("package", str(resident), "--target", "lambda", "-o", str(out), "--no-check")
    assert result.returncode == 0, result.stderr
    texts = ["Serverless inference should start fast.", "A second, rather longer sentence " * 5, "ok"]
    ran = run_like_lambda(out, tmp_path / "run", "3.12", [{"inputs": texts}])
    got = np.asarray(ran["responses"][0]["embeddings"])
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, normalize_embeddings=True)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.999, cos
    assert ran["modules"] == []
