"""The tasks slimserve serves: one table that detection, `--task`, `--list-tasks` and the README read.

A task is what the shipped handler answers (request and response shapes follow the Hugging Face
Inference API and `transformers` pipelines) and how fidelity is judged. Which model heads may serve it is
decided by the head's architecture suffix (`...ForTokenClassification`), so a forced `--task` that does
not fit the model's head is refused before anything is exported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    family: str             # text | image | tensor: which runtime extras the artifact needs
    heads: tuple[str, ...]  # architecture suffixes that can serve it ("Model": any bare encoder)
    optimum_task: str       # the task optimum's exporter is asked for
    request: str
    response: str
    metric: str             # the fidelity metric `mean`/`min` hold, ranked by compare/build
    metric_doc: str
    default_min_fidelity: float


TASKS: tuple[Task, ...] = (
    Task("feature-extraction", "text", ("Model", "ForSequenceClassification", "ForTokenClassification",
                                        "ForQuestionAnswering", "ForMaskedLM"), "feature-extraction",
         '{"inputs": ["text", ...]}', '{"embeddings": [[float, ...], ...]}',
         "cosine", "per-text cosine of the embeddings vs PyTorch", 0.99),
    Task("text-classification", "text", ("ForSequenceClassification",), "text-classification",
         '{"inputs": ["text", ...], "parameters": {"top_k": 1|null, "function_to_apply": "softmax"}}',
         '[{"label": str, "score": float}, ...] (a list per text with top_k)',
         "cosine", "per-text cosine of the logits vs PyTorch (top-1 agreement reported)", 0.99),
    Task("text-ranking", "text", ("ForSequenceClassification",), "text-classification",
         '{"inputs": {"query": str, "documents": [str, ...]}} or {"inputs": [[str, str], ...]}',
         '[{"index": int, "score": float, "text": str}, ...] ranked (pairs: [float, ...])',
         "spearman", "Spearman rank correlation of the scores per query vs PyTorch (score cosine reported)", 0.95),
    Task("token-classification", "text", ("ForTokenClassification",), "token-classification",
         '{"inputs": ["text", ...], "parameters": {"aggregation_strategy": "simple"}}',
         '[[{"entity_group": str, "word": str, "start": int, "end": int, "score": float}, ...], ...]',
         "entity_f1", "entity-level F1 vs the PyTorch model's entities (token-label agreement reported)", 0.95),
    Task("question-answering", "text", ("ForQuestionAnswering",), "question-answering",
         '{"inputs": [{"question": str, "context": str}], "parameters": {"top_k": 1, "max_answer_len": 15}}',
         '{"answer": str, "score": float, "start": int, "end": int} (a list when top_k > 1)',
         "exact_match", "answer-span exact match vs the PyTorch model (start/end agreement reported)", 0.95),
    # "...WithTeacher": distilled DeiT/LeViT, whose `logits` (the pipeline's) average the class and distillation heads
    Task("image-classification", "image", ("ForImageClassification", "ForImageClassificationWithTeacher"),
         "image-classification",
         '{"inputs": ["<base64 image>", ...], "parameters": {"top_k": 5}} or a raw image/* body',
         '[[{"label": str, "score": float}, ...], ...]',
         "top1_agreement", "top-1 label agreement vs PyTorch (top-5 overlap and logit cosine reported)", 0.95),
    Task("text-generation", "text", ("ForCausalLM", "LMHeadModel"), "text-generation-with-past",
         '{"inputs": "prompt" | ["prompt", ...], "parameters": {"max_new_tokens": 32, "do_sample": false, '
         '"temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop": [str], "return_full_text": false}}',
         '[{"generated_text": str, "details": {"finish_reason", "prompt_tokens", "generated_tokens", timings}}, ...]',
         "next_token_agreement", "top-1 next-token agreement with PyTorch over teacher-forced prompt positions "
         "(logit cosine and greedy-decode identical prefix reported)", 0.9),
    Task("tabular-classification", "tabular", (), "",
         '{"inputs": [{"feature": value, ...}, ...]} or {"inputs": [[value, ...], ...]}',
         '{"predictions": [label, ...], "probabilities": [[float, ...], ...]}',
         "label_agreement", "predicted-label agreement vs the original estimator's predict "
         "(max absolute probability error reported)", 0.99),
    Task("tabular-regression", "tabular", (), "",
         '{"inputs": [{"feature": value, ...}, ...]} or {"inputs": [[value, ...], ...]}',
         '{"predictions": [float, ...]}',
         "within_tolerance", "fraction of predictions within 1e-4 × the reference's range of the original "
         "estimator's predict (max absolute error reported)", 0.99),
    Task("tensor", "tensor", (), "",
         '{"inputs": {"name": [[...]], ...}}', '{"outputs": {"name": [[...]], ...}}',
         "cosine", "per-sample cosine of all outputs vs onnxruntime/PyTorch on the original", 0.99),
)

BY_NAME = {task.name: task for task in TASKS}
HF_TASKS = tuple(task.name for task in TASKS if task.family not in ("tensor", "tabular"))
TABULAR_TASKS = tuple(task.name for task in TASKS if task.family == "tabular")


def get_task(name: str) -> Task:
    return BY_NAME[name]


# Encoder-decoder generation heads: served by no task yet (refused up front with its own message).
ENCODER_DECODER_HEADS = ("ForConditionalGeneration", "T5WithLMHeadModel")


def tasks_for_architecture(arch: str) -> tuple[str, ...]:
    """Tasks a model whose architecture is `arch` can serve, best first (the first is the default)."""
    if not arch:
        return ("feature-extraction",)
    if arch.endswith("HeadModel"):  # GPT2LMHeadModel: generation; T5WithLMHeadModel (encoder-decoder): none
        return ("text-generation",) if arch.endswith("LMHeadModel") and arch not in ENCODER_DECODER_HEADS else ()
    fits = [task.name for task in TASKS if any(arch.endswith(head) for head in task.heads)]
    if arch.endswith("ForSequenceClassification"):  # a classifier's default is classification, not ranking
        fits.sort(key=lambda name: name != "text-classification")
    elif arch.endswith(("ForImageClassification", "ForImageClassificationWithTeacher")):
        fits = ["image-classification"]
    elif not arch.endswith("Model"):
        fits.sort(key=lambda name: name == "feature-extraction")
    return tuple(fits)


# The sentence tasks record how their cosine was judged ("top1+cosine" for logits, "abs_error" for tensors):
# `mean` is a cosine for all of them.
_COSINE_METRICS = ("cosine", "top1+cosine", "abs_error")


def ranked_metric(metric: str | None) -> str:
    """The metric a manifest's fidelity `mean` holds (what --min-fidelity and rankings compare)."""
    return "cosine" if metric in (None, *_COSINE_METRICS) else str(metric)


def default_min_fidelity(metric: str | None) -> float:
    """The floor compare recommends above when --min-fidelity is not given, per metric."""
    name = ranked_metric(metric)
    return next((task.default_min_fidelity for task in TASKS if task.metric == name), 0.99)


def markdown_table() -> str:
    """The README's task table (tests/test_tasks.py keeps the README in step with this table)."""
    def cell(text: str) -> str:
        return "`" + text.replace("|", "\\|") + "`"

    lines = ["| task | request | response | fidelity metric (default floor) |", "|---|---|---|---|"]
    for task in TASKS:
        lines.append(f"| `{task.name}` | {cell(task.request)} | {cell(task.response)} | "
                     f"`{task.metric}` ({task.default_min_fidelity}): {task.metric_doc} |")
    return "\n".join(lines)
