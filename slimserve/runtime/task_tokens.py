"""Token classification (NER, part-of-speech): entities with character offsets, like the transformers pipeline.

Shipped beside `model_runtime.py`. A port, in numpy and the `tokenizers` library, of transformers'
`TokenClassificationPipeline` (preprocess, gather_pre_entities, aggregate, group_entities and
aggregate_overlapping_entities), so an optimized model answers exactly what
`pipeline("token-classification", aggregation_strategy=...)` answers on the original model.

Request: `{"inputs": "text" | ["text", ...], "parameters": {...}}` with
- `aggregation_strategy`: `none`, `simple`, `first`, `average` or `max`. The default is `simple`, as the
  Hugging Face Inference API answers (the bare pipeline's default is `none`; send it to get tokens).
- `ignore_labels`: labels left out of the answer (default `["O"]`).
- `stride`: `null` (default) truncates each text to the model's max_length tokens like the pipeline does;
  an integer makes the text run as overlapping windows of max_length tokens sharing `stride` tokens, and
  entities found in overlapping windows are merged as the pipeline does (needs a strategy other than
  `none`, and must be below max_length minus the special tokens).

Answer per text: a list of `{"entity_group", "score", "word", "start", "end"}` (`{"entity", "score",
"index", "word", "start", "end"}` with `none`); `start`/`end` are character offsets into the text as sent;
`word` is the tokens decoded by the tokenizer's decoder (`text[start:end]` is the exact source span). A
single string gets one list, a list of texts a list of lists (the pipeline's shapes).

The tokenizer here is always a fast one (tokenizer.json), so `first`/`average`/`max` are accepted: the
pipeline refuses them only for slow tokenizers.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if __package__:
    from .model_runtime import Encoded, InputError, RequestLimits
    from .task_text import text_inputs
else:  # flat in the artifact
    from model_runtime import Encoded, InputError, RequestLimits  # type: ignore[no-redef]
    from task_text import text_inputs  # type: ignore[no-redef]

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from .model_runtime import LoadedModel

TASKS = ("token-classification",)
STRATEGIES = ("none", "simple", "first", "average", "max")
WORD_STRATEGIES = ("first", "average", "max")
PARAMETERS: dict[str, dict[str, Any]] = {
    "token-classification": {"aggregation_strategy": "simple", "ignore_labels": ["O"], "stride": None},
}


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    strategy = values["aggregation_strategy"]
    if not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
        raise InputError(f'"aggregation_strategy" must be one of {", ".join(STRATEGIES)}')
    ignore = values["ignore_labels"]
    if ignore is None:
        ignore = ["O"]
    if not isinstance(ignore, list) or not all(isinstance(label, str) for label in ignore):
        raise InputError('"ignore_labels" must be a list of label names')
    stride = values["stride"]
    if stride is not None:
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
            raise InputError('"stride" must be a non-negative integer or null')
        if strategy.lower() == "none":
            raise InputError('"stride" needs an "aggregation_strategy" other than "none" '
                             "(overlapping windows are merged entity by entity)")
    return {"aggregation_strategy": strategy.lower(), "ignore_labels": list(ignore), "stride": stride}


@dataclass
class _Tokens:
    """What decoding needs from the tokenizer, prepared once per loaded model."""

    tokenizer: Tokenizer       # truncates at max_length, never pads (chunks are padded here)
    windows: Tokenizer         # the same, reconfigured per request for `stride` (under `lock`)
    lock: threading.Lock
    max_length: int
    added: int                 # special tokens added to one text ([CLS] ... [SEP])
    pad_id: int
    unk_id: int | None
    word_aware: bool           # the model has a continuing-subword prefix ("##"): subwords by length


_STATE: weakref.WeakKeyDictionary[Any, _Tokens] = weakref.WeakKeyDictionary()


def setup(model: LoadedModel) -> None:
    """Two private copies of the model's tokenizer without padding (chunks are padded here, and the
    tokenizer.json may carry a fixed padding), truncating at max_length like the pipeline."""
    from tokenizers import Tokenizer

    if model.tokenizer is None:
        raise ValueError("token-classification needs a tokenizer (runtime.tokenizer)")
    max_length = int(model.spec["max_length"])
    copies = []
    for _ in range(2):
        tok = Tokenizer.from_str(model.tokenizer.to_str())
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        copies.append(tok)
    unk_id = model.spec.get("unk_id")
    if unk_id is None and "unk_id" not in model.spec:  # manifests without it: ask the tokenizer's model
        unk_token = getattr(copies[0].model, "unk_token", None)
        unk_id = copies[0].token_to_id(unk_token) if isinstance(unk_token, str) else None
    _STATE[model] = _Tokens(
        tokenizer=copies[0], windows=copies[1], lock=threading.Lock(), max_length=max_length,
        added=copies[0].num_special_tokens_to_add(False), pad_id=int(model.spec.get("pad_id", 0)),
        unk_id=None if unk_id is None else int(unk_id),
        word_aware=bool(getattr(copies[0].model, "continuing_subword_prefix", None)))


def _state(model: LoadedModel) -> _Tokens:
    if model not in _STATE:
        setup(model)
    return _STATE[model]


@dataclass
class _Chunk:
    """One window of one text: its row in the batch and the encoding that says where its tokens came from."""

    text: int
    row: int
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[int]


def _windows(state: _Tokens, texts: list[str], stride: int, limits: RequestLimits | None) -> list[list[Encoding]]:
    """Each text as the pipeline's overflowing windows, refused (413) before they are built when there
    would be more tokens than the request may run."""
    room = state.max_length - state.added
    if stride >= room:
        raise InputError(f'"stride" must be below {room} (max_length {state.max_length} minus '
                         f"{state.added} special tokens)")
    with state.lock:
        state.windows.no_truncation()
        lengths = [len(e.ids) - state.added for e in state.windows.encode_batch(texts)]
        windows = [1 if n <= room else 1 + -(-(n - room) // (room - stride)) for n in lengths]
        if limits is not None:
            longest = min(max(lengths, default=0) + state.added, state.max_length)
            limits.check_tokens(sum(windows), longest)
        state.windows.enable_truncation(max_length=state.max_length, stride=stride)
        encodings = state.windows.encode_batch(texts)
    return [[e, *e.overflowing] for e in encodings]


def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    texts, single = text_inputs(inputs)
    if limits is not None:
        limits.check_texts(texts)
    state = _state(model)
    if parameters.get("stride") is None:
        per_text = [[e] for e in state.tokenizer.encode_batch(texts)]
    else:
        per_text = _windows(state, texts, int(parameters["stride"]), limits)
    chunks = [_Chunk(text=t, row=0, ids=list(e.ids), offsets=[tuple(o) for o in e.offsets],
                     special=list(e.special_tokens_mask))
              for t, encodings in enumerate(per_text) for e in encodings]
    length = max(len(c.ids) for c in chunks)
    if limits is not None:
        limits.check_tokens(len(chunks), length)
    columns = {"input_ids": np.full((len(chunks), length), state.pad_id, dtype=np.int64),
               "attention_mask": np.zeros((len(chunks), length), dtype=np.int64),
               "token_type_ids": np.zeros((len(chunks), length), dtype=np.int64)}
    for row, (chunk, encoding) in enumerate(zip(chunks, (e for es in per_text for e in es))):
        chunk.row = row
        columns["input_ids"][row, :len(chunk.ids)] = chunk.ids
        columns["attention_mask"][row, :len(chunk.ids)] = encoding.attention_mask
        columns["token_type_ids"][row, :len(chunk.ids)] = encoding.type_ids
    feeds: dict[str, np.ndarray] = {}
    for name, dtype in model.input_types.items():
        if name not in columns:
            raise InputError(f"model input {name!r} cannot be built from text")
        feeds[name] = columns[name].astype(dtype)
    return Encoded(feeds=feeds, count=len(texts), context={"texts": texts, "chunks": chunks}, single=single)


def softmax(logits: np.ndarray) -> np.ndarray:
    """The pipeline's softmax, in the logits' own float32 so argmax ties break the same way."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))


def _pre_entities(state: _Tokens, tokenizer: Tokenizer, text: str, chunk: _Chunk, scores: np.ndarray) -> list[dict[str, Any]]:
    """gather_pre_entities: one record per real token, with the pipeline's subword rule."""
    out = []
    for idx, (token_id, special, (start, end)) in enumerate(zip(chunk.ids, chunk.special, chunk.offsets)):
        if special:
            continue
        word = tokenizer.id_to_token(token_id) or ""
        word_ref = text[start:end]
        if state.word_aware:  # WordPiece-like: a subword's token is longer than its span ("##ack" vs "ack")
            is_subword = len(word) != len(word_ref)
        else:  # the pipeline's fallback heuristic: glued to the previous character
            is_subword = start > 0 and " " not in text[start - 1:start + 1]
        if token_id == state.unk_id:
            word, is_subword = word_ref, False
        out.append({"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx,
                    "is_subword": is_subword})
    return out


def _tokens_to_string(tokenizer: Tokenizer, tokens: list[str]) -> str:
    decoder = tokenizer.decoder
    return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _aggregate_word(tokenizer: Tokenizer, labels: list[str], group: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
    word = _tokens_to_string(tokenizer, [e["word"] for e in group])
    if strategy == "first":
        scores = group[0]["scores"]
    elif strategy == "max":
        scores = max(group, key=lambda e: e["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)
    idx = int(scores.argmax())
    return {"entity": labels[idx], "score": scores[idx], "word": word, "start": group[0]["start"],
            "end": group[-1]["end"]}


def _aggregate_words(tokenizer: Tokenizer, labels: list[str], pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = []
    group: list[dict[str, Any]] = []
    for entity in pre:
        if group and not entity["is_subword"]:
            words.append(_aggregate_word(tokenizer, labels, group, strategy))
            group = []
        group.append(entity)
    if group:
        words.append(_aggregate_word(tokenizer, labels, group, strategy))
    return words


def _tag(name: str) -> tuple[str, str]:
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name  # not in B-/I- form: a continuation


def _group(tokenizer: Tokenizer, entities: list[dict[str, Any]]) -> dict[str, Any]:
    return {"entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": float(np.mean(np.nanmean([e["score"] for e in entities]))),
            "word": _tokens_to_string(tokenizer, [e["word"] for e in entities]),
            "start": entities[0]["start"], "end": entities[-1]["end"]}


def _group_entities(tokenizer: Tokenizer, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent tokens (or words) with the same tag merge; a B- always starts a new entity."""
    groups: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for entity in entities:
        if current:
            bi, tag = _tag(entity["entity"])
            _, last_tag = _tag(current[-1]["entity"])
            if tag == last_tag and bi != "B":
                current.append(entity)
                continue
            groups.append(_group(tokenizer, current))
        current = [entity]
    if current:
        groups.append(_group(tokenizer, current))
    return groups


def _merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """aggregate_overlapping_entities: of entities found twice in overlapping windows keep the longest
    (then the higher score)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    merged = []
    previous = entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged


def _answer(entity: dict[str, Any], strategy: str) -> dict[str, Any]:
    """The pipeline's keys in its order, with plain JSON numbers."""
    if strategy == "none":
        return {"entity": entity["entity"], "score": float(entity["score"]), "index": int(entity["index"]),
                "word": entity["word"], "start": int(entity["start"]), "end": int(entity["end"])}
    return {"entity_group": entity["entity_group"], "score": float(entity["score"]), "word": entity["word"],
            "start": int(entity["start"]), "end": int(entity["end"])}


def entities_of(model: LoadedModel, logits: np.ndarray, encoded: Encoded, parameters: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Each text's entities from the model's logits [rows, tokens, labels] (rows = the encoded windows)."""
    state = _state(model)
    tokenizer = state.tokenizer
    labels = [str(label) for label in model.spec.get("labels") or [f"LABEL_{i}" for i in range(logits.shape[-1])]]
    strategy, ignore = parameters["aggregation_strategy"], set(parameters["ignore_labels"])
    texts: list[str] = encoded.context["texts"]
    per_text: list[list[dict[str, Any]]] = [[] for _ in texts]
    windows = [0] * len(texts)
    for chunk in encoded.context["chunks"]:
        windows[chunk.text] += 1
        pre = _pre_entities(state, tokenizer, texts[chunk.text], chunk, softmax(logits[chunk.row]))
        if strategy in ("none", "simple"):
            entities = []
            for item in pre:
                idx = int(item["scores"].argmax())
                entities.append({"entity": labels[idx], "score": item["scores"][idx], "index": item["index"],
                                 "word": item["word"], "start": item["start"], "end": item["end"]})
        else:
            entities = _aggregate_words(tokenizer, labels, pre, strategy)
        if strategy != "none":
            entities = _group_entities(tokenizer, entities)
        per_text[chunk.text].extend(e for e in entities
                                    if e.get("entity") not in ignore and e.get("entity_group") not in ignore)
    return [[_answer(e, strategy) for e in (_merge_overlapping(found) if windows[t] > 1 else found)]
            for t, found in enumerate(per_text)]


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    logits = np.asarray(outputs[model.spec.get("output") or "logits"])
    answers = entities_of(model, logits, encoded, parameters)
    return answers[0] if encoded.single else answers
