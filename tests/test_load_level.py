"""Offline re-optimization of a recipe's final model and the load-time level the manifest records.

int8-dynamic used to ship the quantizer's graph, which onnxruntime fused again (MatMulIntegerToFloat,
DynamicQuantizeMatMul, Gelu) at every cold start. Now the file is fused offline at a portable level and
loads at `basic`. The reference is onnxruntime itself at ENABLE_ALL, on the same file and on the step's
file before re-optimization (what the handler loaded before), on the built-in evaluation texts.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from slimserve.optimizer.graph_tools import ort_optimize
from slimserve.optimizer.optimize import drop_inferred_value_info
from slimserve.optimizer.steps import graph_opt
from slimserve.runtime.model_runtime import LoadedModel

EVAL_TEXTS = Path(graph_opt.__file__).parents[1] / "data" / "eval_text.jsonl"


@pytest.fixture(scope="module")
def dynamic_dir(minilm_candidate: Callable[[str], Path]) -> Path:
    return minilm_candidate("int8-dynamic")


@pytest.fixture(scope="module")
def step_output(minilm_prepared: Any, dynamic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The int8-dynamic step's own file (quantized, not re-optimized) from the recipe's scratch folder, as
    the handler used to get it: without the quantizer's inferred shapes (optimize.drop_inferred_value_info)."""
    found = [p for p in Path(minilm_prepared.work_dir).glob("recipe-*/0-int8-dynamic/model.onnx")
             if "final.onnx" in {q.name for q in p.parents[1].iterdir()}]
    assert found, "the int8-dynamic recipe's scratch folder is gone"
    shipped_before = tmp_path_factory.mktemp("before") / "model.onnx"
    shutil.copyfile(found[0], shipped_before)
    drop_inferred_value_info(shipped_before, minilm_prepared.exported.onnx_path)
    return shipped_before


@pytest.fixture(scope="module")
def feeds(dynamic_dir: Path) -> list[dict[str, np.ndarray]]:
    """The evaluation texts tokenized as the tokenizer file says, one per feed (as the evaluation and
    most requests run them) plus one padded batch of 16."""
    texts = [json.loads(line)["text"] for line in EVAL_TEXTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    tok = Tokenizer.from_file(str(dynamic_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.enable_padding()
    batches = [[t] for t in texts] + [texts[:16]]
    out = []
    for batch in batches:
        enc = tok.encode_batch(batch)
        out.append({"input_ids": np.array([e.ids for e in enc], np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
                    "token_type_ids": np.array([e.type_ids for e in enc], np.int64)})
    return out


def ort_outputs(path: Path, level: ort.GraphOptimizationLevel, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [o for f in feeds for o in session.run(None, {k: v for k, v in f.items() if k in names})]


def test_int8_dynamic_manifest_records_basic_and_the_handler_loads_at_it(dynamic_dir: Path) -> None:
    manifest = json.loads((dynamic_dir / "slimserve.json").read_text())
    assert manifest["runtime"]["session"] == {"graph_optimization_level": "basic"}
    model = LoadedModel(dynamic_dir, threads=1)
    assert model.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    # Fused offline: the integer matmuls are already the fused contrib ops, nothing left to fuse at load.
    ops = {n.op_type for n in onnx.load(str(dynamic_dir / "model.onnx")).graph.node}
    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "Gelu"} <= ops and "MatMulInteger" not in ops


def test_the_shipped_graph_is_the_one_the_handler_built_at_load(dynamic_dir: Path, step_output: Path,
                                                                 tmp_path: Path) -> None:
    """Same fused nodes as onnxruntime makes of the old file at load (only the int8 weights' Cast/Mul/Reshape,
    folded again at load, are extra): no fusion the handler would not have made (e.g. SkipLayerNormalization
    from the quantizer's inferred shapes), so outputs and warm latency stay the same."""
    at_load = ort_optimize(step_output, tmp_path / "at_load.onnx", "test", "extended")
    def ops(path: Path) -> Counter[str]:
        return Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type not in ("Cast", "Mul", "Reshape"))
    assert ops(dynamic_dir / "model.onnx") == ops(at_load)


def test_embeddings_at_basic_equal_onnxruntime_at_all_on_both_files(
        dynamic_dir: Path, step_output: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    shipped = ort_outputs(dynamic_dir / "model.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, feeds)
    same_file_all = ort_outputs(dynamic_dir / "model.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_ALL, feeds)
    before = ort_outputs(step_output, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, feeds)  # yesterday's handler
    for got, ref, old in zip(shipped, same_file_all, before, strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got, old, rtol=0, atol=1e-6)
    # And the shipped runtime's own embeddings (tokenizer, pooling) match onnxruntime's sentence_embedding.
    model = LoadedModel(dynamic_dir, threads=1)
    texts = ["A man is playing a guitar.", "The quick brown fox jumps over the lazy dog."]
    got = np.asarray(model.predict(texts)["embeddings"], dtype=np.float32)
    tok = Tokenizer.from_file(str(dynamic_dir / "tokenizer.json"))
    tok.enable_padding()  # one padded batch, as the handler runs it (dynamic int8 scales are per batch)
    enc = tok.encode_batch(texts)
    feed = {"input_ids": np.array([e.ids for e in enc]), "attention_mask": np.array([e.attention_mask for e in enc]),
            "token_type_ids": np.array([e.type_ids for e in enc])}
    ref = ort_outputs(step_output, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, [feed])[1]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_reoptimized_file_did_not_grow(dynamic_dir: Path, step_output: Path) -> None:
    assert (dynamic_dir / "model.onnx").stat().st_size <= step_output.stat().st_size * 1.02


def test_constant_folding_offline_would_widen_the_kept_int8_weights(step_output: Path, tmp_path: Path) -> None:
    """Why preoptimize puts widened constants back: folded, the int8 FFN down-projections (Cast/Mul form)
    become float32 initializers (MiniLM: 23.2 -> 33.6 MB); unfold_widened restores exactly those six."""
    folded = ort_optimize(step_output, tmp_path / "folded.onnx", "test", "extended")
    assert folded.stat().st_size > step_output.stat().st_size * 1.3
    model = onnx.load(str(folded))
    assert graph_opt.unfold_widened(onnx.load(str(step_output)), model) == 6
    assert not [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.raw_data) > 1e6]


def test_manifest_without_the_key_loads_at_all_as_before(dynamic_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(dynamic_dir, old)
    manifest = json.loads((old / "slimserve.json").read_text())
    del manifest["runtime"]["session"]
    (old / "slimserve.json").write_text(json.dumps(manifest))
    model = LoadedModel(old, threads=1)
    assert model.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    texts = ["Old manifests keep working."]
    np.testing.assert_allclose(np.asarray(model.predict(texts)["embeddings"]),
                               np.asarray(LoadedModel(dynamic_dir, threads=1).predict(texts)["embeddings"]),
                               rtol=0, atol=1e-6)


def test_preoptimize_refuses_without_inputs_to_check_and_keeps_the_file(step_output: Path, tmp_path: Path) -> None:
    path, level, notes = graph_opt.preoptimize(step_output, tmp_path / "final.onnx", [])
    assert path == step_output and level is None and "no inputs" in notes[0]
