"""`slimserve build` on the task families: the choice is made on the family's own metric, with the task's
default floor, and the packaged winner answers like the transformers pipeline on the original model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_family_tokens import tiny_bert_ner


@pytest.mark.slow
def test_build_a_token_classifier_chooses_by_entity_f1(tmp_path: Path, minilm_dir: Path) -> None:
    from transformers import pipeline

    folder = tiny_bert_ner(tmp_path / "ner", minilm_dir)
    out = tmp_path / "build"
    result = run_cli("build", str(folder), "-o", str(out), "--recipes", "fp32,int8-dynamic", "--runs", "1",
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)
    comparison = json.loads((out / "compare.json").read_text())
    metrics = {c["fidelity"]["metric"] for c in comparison["candidates"] if c.get("fidelity")}
    assert metrics == {"entity_f1"}, comparison["candidates"]
    assert build["budgets"]["min_fidelity"] == 0.95  # the entity-F1 floor, not cosine's 0.99
    winner = build["chosen"]
    assert winner in ("fp32", "int8-dynamic")
    assert "entity_f1" in (out / "check.md").read_text() or "entity_f1" in (out / "build.md").read_text()

    from tests.helpers_lambda import run_like_lambda

    text = "Ada Lovelace met Charles Babbage in London at the Analytical Society."
    answer = run_like_lambda(out / "package", tmp_path / "run", "3.12", [{"inputs": [text]}])["responses"][0]
    theirs = pipeline("token-classification", model=str(folder), aggregation_strategy="simple")(text)
    if winner == "fp32":
        assert [(e["entity_group"], e["start"], e["end"]) for e in answer[0]] == \
            [(e["entity_group"], e["start"], e["end"]) for e in theirs]
    assert all(set(e) == {"entity_group", "score", "word", "start", "end"} for e in answer[0])
