"""Sentence classification (text-classification) answers against `transformers.pipeline` on the original.

Random-init tiny classifiers of two real architectures (BERT, DistilBERT) cover the three heads the
pipeline treats differently: single-label (softmax), multi-label (sigmoid per label) and a one-output
regression head (no function). The optimized fp32 model's answers, in-process and through the packaged
Lambda handler, must carry the pipeline's labels in the pipeline's order and shape, scores within 1e-5.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from slimserve.packagers.interpreters import find_python
from tests.conftest import require, run_cli

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TEXTS = [
    "I loved this film, the acting was wonderful.",
    "Terrible service; we waited an hour and left.",
    "ok",
    "The quarterly report is due on Friday, and the numbers look flat compared with last year.",
    "Ünïcödé, emoji 🚀 and 中文 in one sentence.",
]
# (what the caller sends as "parameters", the same as pipeline keyword arguments)
PARAMETERS: list[dict[str, Any]] = [
    {}, {"top_k": None}, {"top_k": 1}, {"top_k": 2}, {"function_to_apply": "none", "top_k": None},
    {"function_to_apply": "sigmoid"}, {"function_to_apply": "softmax", "top_k": None},
]
MODELS = {  # name -> (architecture, labels, problem_type)
    "bert-sentiment": ("bert", {0: "negative", 1: "neutral", 2: "positive"}, None),
    "bert-multilabel": ("bert", {0: "sports", 1: "politics", 2: "tech", 3: "health"}, "multi_label_classification"),
    "distilbert-regression": ("distilbert", {0: "LABEL_0"}, "regression"),
    "distilbert-one-label": ("distilbert", {0: "toxic"}, None),
}


def _classifier(folder: Path, minilm_dir: Path, arch: str, labels: dict[int, str], problem: str | None) -> Path:
    """initializer_range 0.2 so the labels' scores are well apart (BERT's 0.02 leaves them within ~1e-4,
    where the order would test rounding rather than the handler)."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(1)
    common: dict[str, Any] = {"vocab_size": 30522, "num_labels": len(labels), "id2label": labels,
                              "label2id": {v: k for k, v in labels.items()}, "initializer_range": 0.2}
    if problem:
        common["problem_type"] = problem
    if arch == "bert":
        model: Any = BertForSequenceClassification(BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **common))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            dim=32, n_layers=2, n_heads=4, hidden_dim=64, **common))
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, folder / name)
    if arch == "distilbert":  # DistilBERT's tokenizer makes no segment ids (the model takes none)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["model_input_names"] = ["input_ids", "attention_mask"]
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def models(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (original folder, fp32 optimize output)."""
    root = tmp_path_factory.mktemp("textclass")
    built = {}
    for name, (arch, labels, problem) in MODELS.items():
        folder = _classifier(root / name, minilm_dir, arch, labels, problem)
        out = root / f"{name}-fp32"
        result = run_cli("optimize", str(folder), "-o", str(out), "--recipe", "fp32", "--format", "json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["runtime"]["task"] == "text-classification"
        built[name] = (folder, out)
    return built


def _pipeline(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline("text-classification", model=str(folder), device="cpu")


def _expected(folder: Path) -> list[Any]:
    """The pipeline's answer to every (inputs, parameters) request `_requests` makes, in order."""
    pipe = _pipeline(folder)
    return [pipe(inputs, **parameters) for inputs, parameters in _requests()]


def _requests() -> list[tuple[Any, dict[str, Any]]]:
    return [(inputs, parameters) for parameters in PARAMETERS for inputs in (TEXTS, TEXTS[0])]


def assert_same_answer(got: Any, want: Any, where: str) -> None:
    """Identical structure and labels, scores within 1e-5."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for index, (g, w) in enumerate(zip(got, want)):
            assert_same_answer(g, w, f"{where}[{index}]")
        return
    assert isinstance(got, dict) and set(got) == {"label", "score"}, (where, got)
    assert got["label"] == want["label"], (where, got, want)
    assert abs(got["score"] - want["score"]) < 1e-5, (where, got, want)


@pytest.mark.parametrize("name", list(MODELS))
def test_answers_match_the_pipeline(models: dict[str, tuple[Path, Path]], name: str) -> None:
    from slimserve.runtime.model_runtime import LoadedModel

    folder, out = models[name]
    model = LoadedModel(out, threads=1)
    for (inputs, parameters), want in zip(_requests(), _expected(folder)):
        got = model.predict(inputs, parameters or None)
        assert_same_answer(got, want, f"{name} {parameters} {'list' if isinstance(inputs, list) else 'single'}")


def test_defaults_follow_the_head(models: dict[str, tuple[Path, Path]]) -> None:
    """The pipeline's default function per head: softmax sums to one, sigmoid does not, regression is raw."""
    from slimserve.runtime.model_runtime import LoadedModel

    answers = {name: LoadedModel(out, threads=1).predict(TEXTS[:2], {"top_k": None})
               for name, (_, out) in models.items()}
    assert all(abs(sum(s["score"] for s in row) - 1.0) < 1e-5 for row in answers["bert-sentiment"])
    assert any(abs(sum(s["score"] for s in row) - 1.0) > 1e-3 for row in answers["bert-multilabel"])
    assert all(0.0 < row[0]["score"] < 1.0 for row in answers["distilbert-one-label"])
    raw = _pipeline(models["distilbert-regression"][0])(TEXTS[:2], function_to_apply="none", top_k=None)
    assert_same_answer(answers["distilbert-regression"], raw, "regression: the raw output")


@pytest.mark.parametrize(("parameters", "message"), [
    ({"top_k": 0}, "top_k"), ({"top_k": "2"}, "top_k"), ({"function_to_apply": "relu"}, "function_to_apply"),
    ({"return_all_scores": True}, "unknown parameter"),
])
def test_bad_parameters_are_400(models: dict[str, tuple[Path, Path]], parameters: dict[str, Any],
                                message: str) -> None:
    from slimserve.runtime.model_runtime import InputError, LoadedModel

    with pytest.raises(InputError, match=message):
        LoadedModel(models["bert-sentiment"][1], threads=1).predict(TEXTS, parameters)


def test_function_name_is_case_insensitive_like_the_pipeline(models: dict[str, tuple[Path, Path]]) -> None:
    from slimserve.runtime.model_runtime import LoadedModel

    folder, out = models["bert-sentiment"]
    got = LoadedModel(out, threads=1).predict(TEXTS, {"function_to_apply": "SIGMOID", "top_k": None})
    assert_same_answer(got, _pipeline(folder)(TEXTS, function_to_apply="SIGMOID", top_k=None), "SIGMOID")


@pytest.mark.slow
def test_packaged_lambda_handler_answers_like_the_pipeline(models: dict[str, tuple[Path, Path]],
                                                           tmp_path: Path) -> None:
    from tests.helpers_lambda import run_like_lambda

    require(find_python("3.12"), "python3.12")
    for name in ("bert-sentiment", "distilbert-regression", "bert-multilabel"):
        folder, out = models[name]
        pkg = tmp_path / f"{name}-pkg"
        result = run_cli("package", str(out), "-o", str(pkg), "--target", "lambda", "--no-check")
        assert result.returncode == 0, result.stderr
        events = [{"inputs": inputs, **({"parameters": parameters} if parameters else {})}
                  for inputs, parameters in _requests()]
        run = run_like_lambda(pkg, tmp_path / f"{name}-run", "3.12", events)
        for event, got, want in zip(events, run["responses"], _expected(folder)):
            assert_same_answer(got, want, f"{name} {event.get('parameters')}")
        assert run["modules"] == []  # no torch, transformers or slimserve in the deployed process
