"""The task table: detection from a folder's head, refusal of heads and forced tasks that do not fit, and
the README listing every task as `--list-tasks` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimserve.errors import SlimserveError
from slimserve.optimizer.sources import infer_task
from slimserve.tasks import HF_TASKS, TASKS, markdown_table, tasks_for_architecture
from tests.conftest import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_task_as_the_table_does() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- tasks:begin -->\n", 1)[1].split("\n<!-- tasks:end -->", 1)[0]
    assert block == markdown_table()
    assert all(f"`{task.name}`" in block for task in TASKS)


def test_list_tasks_prints_every_task_with_its_shapes_and_metric() -> None:
    result = run_cli("optimize", "--list-tasks")
    assert result.returncode == 0, result.stderr
    for task in TASKS:
        assert task.name in result.stdout and task.request in result.stdout and task.metric in result.stdout


@pytest.mark.parametrize(("arch", "task"), [
    ("BertModel", "feature-extraction"),
    ("BertForMaskedLM", "feature-extraction"),
    ("DistilBertForSequenceClassification", "text-classification"),
    ("RobertaForTokenClassification", "token-classification"),
    ("DebertaV2ForQuestionAnswering", "question-answering"),
    ("ViTForImageClassification", "image-classification"),
    ("ConvNextForImageClassification", "image-classification"),
    ("LlamaForCausalLM", "text-generation"),
    ("Qwen2ForCausalLM", "text-generation"),
    ("GPT2LMHeadModel", "text-generation"),
])
def test_task_is_detected_from_the_head(arch: str, task: str) -> None:
    assert infer_task({"architectures": [arch]}, "transformers") == task


def test_a_cross_encoder_is_a_ranker() -> None:
    config = {"architectures": ["BertForSequenceClassification"], "sentence_transformers": {"version": "5.7.0"}}
    assert infer_task(config, "transformers") == "text-ranking"


@pytest.mark.parametrize("arch", ["DetrForObjectDetection", "BertForNextSentencePrediction"])
def test_a_head_no_task_fits_is_refused_with_the_supported_list(arch: str) -> None:
    with pytest.raises(SlimserveError) as caught:
        infer_task({"architectures": [arch]}, "transformers")
    assert arch in caught.value.message and "question-answering" in (caught.value.hint or "")


@pytest.mark.parametrize("arch", ["T5ForConditionalGeneration", "BartForConditionalGeneration",
                                  "WhisperForConditionalGeneration", "T5WithLMHeadModel"])
def test_encoder_decoder_generation_is_refused_as_not_supported_yet(arch: str) -> None:
    with pytest.raises(SlimserveError) as caught:
        infer_task({"architectures": [arch], "is_encoder_decoder": True}, "transformers")
    assert arch in caught.value.message and "not supported yet" in caught.value.message
    assert "text-generation" in (caught.value.hint or "")


@pytest.mark.parametrize(("arch", "forced"), [
    ("DistilBertForTokenClassification", "text-classification"),  # NER labels read as sentence labels
    ("BertForSequenceClassification", "token-classification"),
    ("ViTForImageClassification", "text-classification"),
    ("BertForQuestionAnswering", "text-ranking"),
])
def test_a_forced_task_that_does_not_fit_the_head_is_refused(arch: str, forced: str) -> None:
    with pytest.raises(SlimserveError, match=f"--task {forced} does not fit"):
        infer_task({"architectures": [arch]}, "transformers", forced)


def test_every_hf_task_is_served_by_some_head() -> None:
    heads = {"BertModel", "BertForSequenceClassification", "BertForTokenClassification",
             "BertForQuestionAnswering", "ViTForImageClassification", "LlamaForCausalLM"}
    served = {task for arch in heads for task in tasks_for_architecture(arch)}
    assert served == set(HF_TASKS)
