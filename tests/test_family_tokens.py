"""Token classification: the shipped runtime answers what transformers' token-classification pipeline answers.

Two real architectures built from their configs with random weights: BERT with the MiniLM WordPiece
tokenizer (uncased, "##" subwords, [UNK] for emoji) and RoBERTa with a byte-level BPE tokenizer trained
here with `tokenizers` (no continuing-subword prefix: the pipeline's fallback subword heuristic, "Ġ"
words decoded by the ByteLevel decoder, trimmed offsets). A random classifier puts labels everywhere, so
its head is redrawn with a strong "O" bias: most tokens are "O" and a few runs are B-/I- entities, which is
what real NER output looks like and what exercises grouping. The reference is always the pipeline on
the original PyTorch model; the runtime runs the ONNX export slimserve makes.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimserve.packagers.interpreters import find_python
from tests.conftest import require, run_cli

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
# Not all B-/I-: "DATE" (no prefix: a continuation tag for the pipeline) and a hyphenated name.
ODD_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "DATE", "B-MISC", "I-MISC", "X-Y-Z"]
STRATEGIES = ("none", "simple", "first", "average", "max")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

LONG = ("In 1969 Neil Armstrong and Buzz Aldrin landed on the Moon; Michael Collins orbited in Columbia. "
        "NASA ran Apollo 11 from Houston, Texas, and launched it from Kennedy Space Center in Florida. " * 12)
TEXTS = [
    "Barack Obama was born in Honolulu, Hawaii.",
    "Angela Merkel met Emmanuel Macron in Berlin on Tuesday.",
    "José Saramago, Zoë Kravitz and Timothée Chalamet visited Düsseldorf & München.",
    "Kyoto (京都) and 北京大学; Москва — столица России. Αθήνα!",
    "   Leading   spaces,\tand    several     spaces   between words.   ",
    "E-mail alice@example.com, visit https://example.org/a?b=c — prices rose 3.4% in Q2...",
    "Samsung shares jumped 🚀📈 in Seoul; Mr. O'Neill said \"wow\"!!",
    "İstanbul, ǅemal and the ﬁnance ministry (½ of Ⅻ) — naïve café coöperation.",
    "Hello",
    "",
    LONG,
]


def _realistic_head(model: Any, labels: list[str], seed: int, scale: float, o_bias: float) -> None:
    """Redraw the classifier so most tokens are "O" and some are entities (see the module docstring)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=generator) * scale)
        model.classifier.bias.zero_()
        model.classifier.bias[labels.index("O")] = o_bias


def tiny_bert_ner(folder: Path, minilm_dir: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512, num_labels=len(NER_LABELS),
                        id2label=dict(enumerate(NER_LABELS)), label2id={n: i for i, n in enumerate(NER_LABELS)})
    model = BertForTokenClassification(config)
    _realistic_head(model, NER_LABELS, seed=1, scale=0.6, o_bias=3.0)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, folder / name)
    return folder


def tiny_roberta_ner(folder: Path) -> Path:
    """RoBERTa with a byte-level BPE tokenizer trained on the built-in NER texts, 64 tokens at most (so
    truncation and windows show on short texts)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaForTokenClassification, RobertaTokenizerFast

    corpus = [json.loads(line)["text"] for line in
              (Path(__file__).resolve().parent.parent / "optimizer" / "data" / "ner_calib.jsonl").read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus + TEXTS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                         unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                         model_max_length=64).save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2, num_labels=len(ODD_LABELS),
                           id2label=dict(enumerate(ODD_LABELS)), label2id={n: i for i, n in enumerate(ODD_LABELS)})
    model = RobertaForTokenClassification(config)
    _realistic_head(model, ODD_LABELS, seed=2, scale=0.25, o_bias=3.0)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


class Served:
    """One architecture: its folder, slimserve's export of it (prepared once), and the pipeline on it."""

    def __init__(self, folder: Path, work: Path) -> None:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from slimserve.optimizer.optimize import prepare
        from slimserve.optimizer.sources import resolve_source
        from slimserve.runtime.model_runtime import LoadedModel

        self.folder = folder
        self.prepared = prepare(resolve_source(str(folder)), work)
        exported = self.prepared.exported
        self.model = LoadedModel(exported.onnx_path.parent, threads=1, model_file=exported.onnx_path,
                                 spec=exported.runtime)
        self.torch_model = AutoModelForTokenClassification.from_pretrained(str(folder))
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def pipeline(self, **kwargs: Any) -> Callable[..., Any]:
        from transformers import pipeline

        return pipeline("token-classification", model=self.torch_model, tokenizer=self.tokenizer, device="cpu",
                        **kwargs)


@pytest.fixture(scope="module", params=["bert", "roberta"])
def served(request: pytest.FixtureRequest, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp(f"tokens-{request.param}")
    folder = tiny_bert_ner(root / "model", minilm_dir) if request.param == "bert" else tiny_roberta_ner(root / "model")
    return Served(folder, root / "work")


def assert_same_entities(ours: Any, theirs: Any, tol: float = 1e-4) -> None:
    """Identical entities (keys, labels, words, offsets, order); scores within `tol`."""
    assert len(ours) == len(theirs), (ours, theirs)
    for got, want in zip(ours, theirs):
        if isinstance(want, list):
            assert_same_entities(got, want, tol)
            continue
        assert list(got) == list(want), (got, want)
        for key, value in want.items():
            if key == "score":
                assert isinstance(got[key], float) and abs(got[key] - float(value)) <= tol, (got, want)
            else:
                assert got[key] == (int(value) if key in ("start", "end", "index") else value), (key, got, want)


def count_entities(answer: list[list[dict[str, Any]]]) -> int:
    return sum(len(entities) for entities in answer)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_entities_match_the_pipeline(served: Served, strategy: str) -> None:
    ours = served.model.predict(TEXTS, {"aggregation_strategy": strategy})
    theirs = served.pipeline(aggregation_strategy=strategy)(TEXTS)
    assert count_entities(theirs) >= 5  # the realistic head found entities to compare
    assert_same_entities(ours, theirs)
    for text, entities in zip(TEXTS, ours):
        assert all(0 <= e["start"] <= e["end"] <= len(text) for e in entities)


def test_the_default_is_simple_and_a_single_string_gets_one_list(served: Served) -> None:
    text = TEXTS[1]
    ours = served.model.predict(text)
    assert_same_entities(ours, served.pipeline(aggregation_strategy="simple")(text))
    assert isinstance(ours, list) and all("entity_group" in e for e in ours)


def test_ignore_labels_as_the_pipeline(served: Served) -> None:
    labels = served.model.spec["labels"]
    for ignore in ([], [labels[1], "O"], ["nothing"]):
        ours = served.model.predict(TEXTS[:4], {"aggregation_strategy": "none", "ignore_labels": ignore})
        assert_same_entities(ours, served.pipeline(ignore_labels=ignore)(TEXTS[:4]))
    everything = served.model.predict(TEXTS[0], {"aggregation_strategy": "none", "ignore_labels": []})
    real_tokens = len(served.tokenizer(TEXTS[0])["input_ids"]) - 2
    assert [e["index"] for e in everything] == list(range(1, real_tokens + 1))


@pytest.mark.parametrize("strategy", ["simple", "first", "max", "average"])
def test_stride_windows_match_the_pipeline(served: Served, strategy: str) -> None:
    texts = [LONG * 2, TEXTS[2], LONG[:700]]
    stride = 16
    ours = served.model.predict(texts, {"aggregation_strategy": strategy, "stride": stride})
    theirs = served.pipeline(aggregation_strategy=strategy, stride=stride)(texts)
    assert_same_entities(ours, theirs)
    truncated = served.model.predict(texts[0], {"aggregation_strategy": strategy})
    assert max(e["end"] for e in ours[0]) > max(e["end"] for e in truncated)  # the whole text was read


def test_fp32_export_has_perfect_entity_fidelity(served: Served) -> None:
    from slimserve.optimizer.optimize import evaluate

    fidelity = evaluate(served.prepared, served.prepared.exported.onnx_path)
    assert fidelity.metric == "entity_f1" and fidelity.mean == 1.0 and fidelity.min == 1.0
    assert fidelity.samples == 62 and fidelity.reference == "pytorch"
    assert fidelity.details is not None
    assert fidelity.details["token_label_agreement"] == 1.0 and fidelity.details["logit_cosine_min"] > 0.9999


def test_eval_file_requests_and_bad_eval_file(tmp_path: Path) -> None:
    from slimserve.errors import SlimserveError
    from slimserve.optimizer.families.tokens import FAMILY

    good = tmp_path / "eval.jsonl"
    good.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS), encoding="utf-8")
    evalset = FAMILY.eval_set("token-classification", good)
    assert [t for request in evalset.requests for t in request] == TEXTS
    assert evalset.calibration == evalset.requests and str(good) in evalset.description
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no text"}\n', encoding="utf-8")
    with pytest.raises(SlimserveError, match="text"):
        FAMILY.eval_set("token-classification", bad)


def test_entity_f1_definition() -> None:
    from slimserve.optimizer.families.tokens import entity_f1

    assert entity_f1(set(), set()) == 1.0
    assert entity_f1({(0, 5, "PER")}, set()) == 0.0
    assert entity_f1({(0, 5, "PER"), (6, 9, "LOC")}, {(0, 5, "PER"), (6, 9, "ORG")}) == 0.5


@pytest.mark.parametrize(("inputs", "parameters", "status", "message"), [
    (["a"], {"aggregation_strategy": "best"}, 400, "aggregation_strategy"),
    (["a"], {"aggregation_strategy": 3}, 400, "aggregation_strategy"),
    (["a"], {"top_k": 3}, 400, "unknown parameter 'top_k'"),
    (["a"], {"ignore_labels": "O"}, 400, "ignore_labels"),
    (["a"], {"stride": -1}, 400, "stride"),
    (["a"], {"stride": 8, "aggregation_strategy": "none"}, 400, "stride"),
    (["a"], {"stride": 10_000}, 400, "stride"),
    ([1, 2], None, 400, "list of strings"),
    ({"text": "a"}, None, 400, "list of strings"),
    ([], None, 400, "empty"),
    (["\ud800"], None, 400, "Unicode"),
    (["a"] * 65, None, 413, "too many inputs"),
    (["word " * 5000], None, 413, "too long"),
])
def test_bad_requests_are_caller_errors(served: Served, inputs: Any, parameters: Any, status: int,
                                        message: str) -> None:
    from slimserve.runtime.model_runtime import InputError

    limits = served.model.limits(environ={})
    with pytest.raises(InputError) as info:
        served.model.predict(inputs, parameters, limits)
    assert info.value.status == status and message.lower() in str(info.value).lower()


def test_stride_windows_are_bounded_before_they_are_built(served: Served) -> None:
    """The smallest step (stride = window - 1) would make one window per token: refused up front."""
    from slimserve.runtime.model_runtime import LimitError

    limits = served.model.limits(environ={})
    stride = served.model.spec["max_length"] - 3  # [CLS]/<s> and [SEP]/</s> take two
    text = "word " * (limits.max_chars // 5)
    with pytest.raises(LimitError, match="request too large"):
        served.model.predict([text], {"stride": stride}, limits)
    answer = served.model.predict([text[:300]], {"stride": stride}, limits)  # a short text in many windows
    assert_same_entities(answer, served.pipeline(aggregation_strategy="simple", stride=stride)([text[:300]]))


# --- end to end: optimize with the CLI, package for Lambda, run it like Lambda ------------------------

REQUESTS = [
    {"inputs": TEXTS[:4], "parameters": {"aggregation_strategy": "simple"}},
    {"inputs": TEXTS[1], "parameters": {"aggregation_strategy": "first"}},
    {"inputs": [LONG[:2000]], "parameters": {"aggregation_strategy": "max", "stride": 16}},  # RoBERTa: 2048 chars max
    {"inputs": TEXTS[4:8], "parameters": {"aggregation_strategy": "none", "ignore_labels": []}},
]
BAD = [
    ({"inputs": ["a"], "parameters": {"aggregation_strategy": "best"}}, 400),
    ({"inputs": ["a"], "parameters": {"grouped_entities": True}}, 400),
    ({"inputs": [3]}, 400),
    ({"inputs": ["a"] * 65}, 413),
    ({"inputs": ["word " * 5000]}, 413),
]


def _pipeline_answers(served: Served) -> list[Any]:
    answers = []
    for request in REQUESTS:
        params = dict(request["parameters"])
        strategy = params.pop("aggregation_strategy")
        answers.append(served.pipeline(aggregation_strategy=strategy, **params)(request["inputs"]))
    return answers


def _lambda_event(payload: Any) -> dict[str, Any]:
    return {"body": json.dumps(payload), "isBase64Encoded": False,
            "requestContext": {"http": {"method": "POST"}}, "rawPath": "/"}


@pytest.mark.slow
def test_optimize_package_and_serve_like_lambda(served: Served, tmp_path: Path) -> None:
    from tests.helpers_lambda import run_like_lambda

    require(find_python("3.12"), "python3.12")
    events = [r for r in REQUESTS] + [_lambda_event(payload) for payload, _ in BAD]
    expected = _pipeline_answers(served)
    measured = {}
    for recipe in ("fp32", "int8-dynamic"):
        out, pkg = tmp_path / recipe / "out", tmp_path / recipe / "pkg"
        result = run_cli("optimize", str(served.folder), "-o", str(out), "--recipe", recipe, "--format", "json")
        assert result.returncode == 0, result.stderr
        fidelity = json.loads(result.stdout)["fidelity"]
        assert fidelity["metric"] == "entity_f1" and fidelity["samples"] == 62
        assert {"token_label_agreement", "logit_cosine_mean"} <= set(fidelity["details"])
        measured[recipe] = fidelity
        result = run_cli("package", str(out), "-o", str(pkg), "--target", "lambda")
        assert result.returncode == 0, result.stderr
        ran = run_like_lambda(pkg, tmp_path / recipe / "run", "3.12", events)
        assert ran["modules"] == []  # no torch, transformers or slimserve in the deployed process
        answers = ran["responses"][:len(REQUESTS)]
        for (_, status), response in zip(BAD, ran["responses"][len(REQUESTS):]):
            assert response["statusCode"] == status, response
            assert "error" in json.loads(response["body"])
        if recipe == "fp32":
            assert fidelity["mean"] == 1.0
            for got, want in zip(answers, expected):
                assert_same_entities(got, want)
        else:
            # int8 on a random model: the headline is entity F1 of its simple-strategy entities vs the
            # pipeline's, the bar slimserve.tasks documents for token classification.
            assert fidelity["mean"] >= 0.95, fidelity
            f1s = []
            for got, want in zip(answers[:3], expected[:3]):
                pairs = zip(got, want) if isinstance(want[0], list) else [(got, want)]
                for g, w in pairs:
                    g_set = {(e["start"], e["end"], e["entity_group"]) for e in g}
                    w_set = {(int(e["start"]), int(e["end"]), e["entity_group"]) for e in w}
                    f1s.append(1.0 if not g_set and not w_set else 2 * len(g_set & w_set) / (len(g_set) + len(w_set)))
            assert not math.isnan(float(np.mean(f1s))) and float(np.mean(f1s)) >= 0.8, f1s
    print(json.dumps({name: {"mean": f["mean"], "min": f["min"], **f["details"]} for name, f in measured.items()}))
