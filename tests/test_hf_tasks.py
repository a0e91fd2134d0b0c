"""Hugging Face folders of the plain `transformers` library: feature extraction and text classification.

The models are tiny random BERTs saved in the test with MiniLM's tokenizer, so nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _tiny_bert(folder: Path, minilm_dir: Path, classifier: bool) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512, num_labels=3,
                        id2label={0: "negative", 1: "neutral", 2: "positive"},
                        label2id={"negative": 0, "neutral": 1, "positive": 2})
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, folder / name)
    return folder


@pytest.mark.parametrize("classifier", [False, True], ids=["feature-extraction", "text-classification"])
def test_transformers_folder_end_to_end(tmp_path: Path, minilm_dir: Path, classifier: bool) -> None:
    folder = _tiny_bert(tmp_path / "model", minilm_dir, classifier)
    out = tmp_path / "out"
    result = run_cli("optimize", str(folder), "-o", str(out), "--recipe", "int8-dynamic", "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    runtime, fidelity = manifest["runtime"], manifest["fidelity"]
    assert manifest["source"]["library"] == "transformers"
    assert {"tokenizer.json", "config.json"} <= {f["path"] for f in manifest["files"]}
    if classifier:
        assert runtime["task"] == "text-classification" and runtime["labels"] == ["negative", "neutral", "positive"]
        assert fidelity["metric"] == "top1+cosine" and 0.0 <= fidelity["top1_agreement"] <= 1.0
    else:
        assert runtime["task"] == "feature-extraction" and runtime["pooling"] == "mean"
        assert fidelity["metric"] == "cosine"
    assert fidelity["reference"] == "pytorch" and fidelity["samples"] >= 150 and fidelity["mean"] > 0.95

    from slimserve.runtime.model_runtime import LoadedModel

    answer = LoadedModel(out).predict_texts(["a short sentence", "another, longer one with more words"])
    if classifier:
        assert len(answer) == 2 and {a["label"] for a in answer} <= {"negative", "neutral", "positive"}
        assert all(0.0 <= a["score"] <= 1.0 for a in answer)
    else:
        assert len(answer["embeddings"]) == 2 and len(answer["embeddings"][0]) == 32


def test_explicit_task_overrides_detection(tmp_path: Path, minilm_dir: Path) -> None:
    folder = _tiny_bert(tmp_path / "model", minilm_dir, classifier=True)
    out = tmp_path / "out"
    result = run_cli("optimize", str(folder), "-o", str(out), "--task", "feature-extraction", "--recipe", "fp32",
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["runtime"]["output"] == "last_hidden_state"
