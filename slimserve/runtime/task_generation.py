"""Text generation with a decoder-only language model: a generate loop over an ONNX graph with a KV cache.

Shipped beside `model_runtime.py`; imports only numpy and tokenizers. The graph is optimum's
`text-generation-with-past` export: one decoder taking `input_ids`, `attention_mask`, (`position_ids`) and
`past_key_values.N.key/value`, answering `logits` and `present.N.key/value`. The prompt runs once with
empty (length 0) past tensors; every later step feeds only the new token with the previous step's
presents as the past, so no step re-runs the sequence. (The graph itself concatenates past and new
keys/values each step, so the cache is copied once per step inside onnxruntime: linear per token, no
preallocated buffer; a GroupQueryAttention graph with a shared buffer would avoid that copy.)

Request (Hugging Face Inference API): `{"inputs": "prompt" | ["prompt", ...] | chat | [chat, ...]}` where a
chat is `[{"role": "system"|"user"|"assistant", "content": str}, ...]`, with `"parameters"`:
`max_new_tokens` (32), `min_new_tokens` (EOS cannot end generation before it), `do_sample`, `temperature`, `top_k`, `top_p`, `repetition_penalty` (defaults: the
model's generation_config.json, as transformers uses them; greedy when it has none), `seed` (null: a fresh
one), `stop` (strings that end generation, kept in the text as transformers' `stop_strings` does; one
may begin in the prompt), `return_full_text` (false, as the Inference API) and `details` (true: finish
reason, token counts, the generated token ids, time to first token and tokens/s). `temperature` 0 means
greedy. Answer: `[{"generated_text": str, "details": {...}}]`, one per prompt. `stream` gives the same
generation as token events for a streaming front (server-sent events).

Chats are rendered as the pipeline renders them with the model's chat template (a final assistant
message is continued, otherwise the generation prompt is added) and tokenized without adding special
tokens. The template is Jinja, which this runtime cannot import: the optimizer pre-renders it into the
strings around each message (optimizer/chat_format.py, verified against transformers); a model whose
template cannot be pre-rendered answers chat input with a 400 saying why. With `return_full_text`, a
chat's answer is the messages plus the new assistant message, as the pipeline answers.

Token choice replicates `transformers`' `generate`: the last position's float32 logits, the repetition
penalty over every id of the sequence so far, then (sampling) temperature, top-k and top-p in that order;
greedy is the argmax. Sampling draws from a generator seeded per request, so a seed reproduces the
answer (not torch's draws): the standard library's Mersenne Twister (`random.Random(seed)`), since the
slim Lambda layer ships numpy without `numpy.random`. A text prompt is tokenized with the special tokens
transformers' tokenizer adds (measured by the optimizer). Text is decoded as the text-generation
pipeline does: the whole sequence without special tokens, cleaned of tokenization spaces, minus the
decoded prompt's length.

Prompts run one at a time (no padding, so no position arithmetic can differ from transformers).
Bounds: prompts per request (`max_batch`), characters per prompt (`max_chars`), prompt tokens +
`max_new_tokens` within the model's context window, `max_new_tokens` within `max_new_tokens_limit`
(`SLIMSERVE_MAX_NEW_TOKENS`) and all prompts' tokens + new tokens within `max_tokens`; optionally a time
budget per request (`SLIMSERVE_MAX_GENERATION_SECONDS`, e.g. a little under the Lambda timeout), after
which the answer holds what was generated so far with finish_reason "time_limit".
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if __package__:
    from .model_runtime import Encoded, InputError, LimitError, RequestLimits, env_limit
else:  # flat in the artifact
    from model_runtime import Encoded, InputError, LimitError, RequestLimits, env_limit  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .model_runtime import LoadedModel

TASKS = ("text-generation",)
PARAMETERS: dict[str, dict[str, Any]] = {
    "text-generation": {"max_new_tokens": 32, "min_new_tokens": None, "do_sample": None, "temperature": None, "top_k": None,
                        "top_p": None, "repetition_penalty": None, "seed": None, "stop": None,
                        "return_full_text": False, "details": True},
}
# What transformers' GenerationConfig uses when the model's generation_config.json says nothing.
SAMPLING_DEFAULTS: dict[str, Any] = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
                                     "repetition_penalty": 1.0}
DEFAULT_MAX_NEW_TOKENS_LIMIT = 256
NEW_TOKENS_ENV = "SLIMSERVE_MAX_NEW_TOKENS"
SECONDS_ENV = "SLIMSERVE_MAX_GENERATION_SECONDS"
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
CHAT_ROLES = ("system", "user", "assistant")
Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Prompt:
    text: str                 # the prompt, or the chat rendered by its template
    ids: list[int]
    chat: Chat | None = None  # the messages, when the request sent a chat


# -- parameters ---------------------------------------------------------------------------------------
def _number(values: dict[str, Any], name: str) -> float | None:
    value = values[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f'"{name}" must be a number')
    return float(value)


def _integer(values: dict[str, Any], name: str) -> int | None:
    value = values[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f'"{name}" must be an integer')
    return int(value)


def _flag(values: dict[str, Any], name: str) -> bool | None:
    value = values[name]
    if value is not None and not isinstance(value, bool):
        raise InputError(f'"{name}" must be true or false')
    return value


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    """Each value checked for type and range (None: the model's generation default, filled in later)."""
    out: dict[str, Any] = dict(values)
    max_new = _integer(values, "max_new_tokens")
    if max_new is None or max_new < 1:
        raise InputError('"max_new_tokens" must be a positive integer')
    out["max_new_tokens"] = max_new
    min_new = _integer(values, "min_new_tokens")
    if min_new is not None and min_new < 0:
        raise InputError('"min_new_tokens" must be 0 or a positive integer')
    out["min_new_tokens"] = min_new or 0
    for name in ("do_sample", "return_full_text", "details"):
        out[name] = _flag(values, name)
    for name in ("return_full_text", "details"):
        if out[name] is None:
            raise InputError(f'"{name}" must be true or false')
    temperature = _number(values, "temperature")
    if temperature is not None and temperature < 0:
        raise InputError('"temperature" must be 0 (greedy) or positive')
    out["temperature"] = temperature
    top_k = _integer(values, "top_k")
    if top_k is not None and top_k < 0:
        raise InputError('"top_k" must be 0 (off) or a positive integer')
    out["top_k"] = top_k
    top_p = _number(values, "top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InputError('"top_p" must be in (0, 1]')
    out["top_p"] = top_p
    penalty = _number(values, "repetition_penalty")
    if penalty is not None and penalty <= 0:
        raise InputError('"repetition_penalty" must be positive')
    out["repetition_penalty"] = penalty
    seed = _integer(values, "seed")
    if seed is not None and not 0 <= seed < 2**63:
        raise InputError('"seed" must be an integer in [0, 2**63)')
    out["seed"] = seed
    out["stop"] = _stop_strings(values["stop"])
    return out


def _stop_strings(raw: Any) -> list[str]:
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise InputError('"stop" must be a non-empty string or a list of them')
    if len(items) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in items):
        raise InputError(f'"stop" takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_CHARS} characters')
    return list(items)


def sampling(model: LoadedModel, parameters: dict[str, Any]) -> dict[str, Any]:
    """The request's values, else the model's generation_config.json, else transformers' defaults."""
    model_defaults = model.spec.get("generation_defaults") or {}
    chosen = {name: parameters[name] if parameters[name] is not None else model_defaults.get(name, default)
              for name, default in SAMPLING_DEFAULTS.items()}
    if chosen["temperature"] == 0:
        chosen["do_sample"] = False
    return chosen


# -- inputs -------------------------------------------------------------------------------------------
def setup(model: LoadedModel) -> None:
    """Prompts are encoded whole (bounded by the limits, not truncated) and one at a time (no padding)."""
    if model.tokenizer is None:
        raise ValueError("a text-generation model needs its tokenizer")
    model.tokenizer.no_truncation()
    model.tokenizer.no_padding()
    new_tokens_limit(model.spec)  # a misconfigured SLIMSERVE_* variable fails the load, not every request
    time_budget(model.spec)


def prompts(inputs: Any) -> tuple[list[str | Chat], bool]:
    """The prompts (strings) or chats (lists of {"role", "content"} messages) of a request, and whether
    it sent one string (answered as a one-element list anyway, as the Inference API does)."""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, dict):
        raise InputError('a chat is a list of messages: "inputs": [{"role": "user", "content": "..."}]')
    if not isinstance(inputs, list):
        raise InputError('"inputs" must be a prompt string, a list of prompt strings, or a chat (a list of '
                         '{"role", "content"} messages)')
    if not inputs:
        raise InputError('"inputs" is empty')
    if all(isinstance(item, dict) for item in inputs):
        return [_chat(inputs, '"inputs"')], False
    if all(isinstance(item, list) for item in inputs):
        return [_chat(item, f"inputs[{i}]") for i, item in enumerate(inputs)], False
    if not all(isinstance(item, str) for item in inputs):
        raise InputError('"inputs" must be a prompt string, a list of prompt strings, or a chat (a list of '
                         '{"role", "content"} messages)')
    return list(inputs), False


def _chat(messages: list[Any], where: str) -> Chat:
    if not messages:
        raise InputError(f"{where} is an empty chat")
    chat = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise InputError(f'{where}[{index}] must be a message {{"role": str, "content": str}}')
        if message["role"] not in CHAT_ROLES:
            raise InputError(f"{where}[{index}] role must be one of {', '.join(CHAT_ROLES)}")
        if not isinstance(message["content"], str):
            raise InputError(f'{where}[{index}]["content"] must be a string')
        chat.append({"role": message["role"], "content": message["content"]})
    return chat


def render_chat(chat_format: dict[str, Any], messages: Chat) -> str | None:
    """The chat as transformers' text-generation pipeline renders it with the model's template, joined
    from the strings the optimizer pre-rendered (optimizer/chat_format.py, whose `render` is the same
    function): a final assistant message is continued, anything else ends with the generation prompt.
    None: the template does not accept this sequence of roles."""
    roles = [m["role"] for m in messages]
    if roles[0] not in chat_format["start"]:
        return None
    trim = bool(chat_format["trim"])
    contents = [m["content"].strip() if trim else m["content"] for m in messages]
    if trim and roles[-1] == "assistant":  # continued: transformers cuts at a tag appended to it
        contents[-1] = messages[-1]["content"].lstrip()
    parts = [chat_format["start"][roles[0]], contents[0]]
    for a, b, content in zip(roles, roles[1:], contents[1:]):
        between = chat_format["between"].get(f"{a}>{b}")
        if between is None:
            return None
        parts += [between, content]
    if roles[-1] == "assistant":
        text = "".join(parts)
        return text.rstrip() if trim else text
    if roles[-1] not in chat_format["end"]:
        return None
    return "".join([*parts, chat_format["end"][roles[-1]]])


def _prompt_text(model: LoadedModel, item: str | Chat, index: int) -> str:
    if isinstance(item, str):
        return item
    chat_format = model.spec.get("chat")
    if not chat_format:
        why = model.spec.get("chat_unsupported") or "the model has no chat template"
        raise InputError(f"chat input is not supported for this model ({why}): send the prompt as text")
    text = render_chat(chat_format, item)
    if text is None:
        roles = ", ".join(m["role"] for m in item)
        raise InputError(f"inputs[{index}]: this model's chat template does not accept the roles {roles}")
    return text


def _token_ids(model: LoadedModel, text: str, plain: bool) -> list[int]:
    """A plain prompt gets the special tokens transformers' tokenizer adds (BOS...): the ones the optimizer
    measured around it (`special_tokens`: {"prefix", "suffix"}; transformers may add them from
    tokenizer_config.json rather than tokenizer.json), else tokenizer.json's own. A chat gets none."""
    around = model.spec.get("special_tokens")
    if plain and around is None:
        return list(model.tokenizer.encode(text, add_special_tokens=True).ids)
    ids = list(model.tokenizer.encode(text, add_special_tokens=False).ids)
    if plain and around is not None:
        ids = [*around["prefix"], *ids, *around["suffix"]]
    return ids


def _encode_prompts(model: LoadedModel, items: list[str | Chat], limits: RequestLimits | None) -> list[Prompt]:
    """Each prompt tokenized as the pipeline does: text with the tokenizer's special tokens (BOS), a
    rendered chat without (its template wrote them)."""
    if limits is not None:
        limits.check_batch(len(items))
        limits.check_texts([m["content"] for item in items if not isinstance(item, str) for m in item]
                           + [item for item in items if isinstance(item, str)])
    result = []
    for index, item in enumerate(items):
        text = _prompt_text(model, item, index)
        if limits is not None:
            limits.check_texts([text])
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"inputs[{index}] is not valid Unicode text (lone surrogate)") from None
        ids = _token_ids(model, text, plain=isinstance(item, str))
        if not ids:
            raise InputError(f"inputs[{index}] is empty: the prompt needs at least one token")
        result.append(Prompt(text=text, ids=ids, chat=None if isinstance(item, str) else item))
    return result


def new_tokens_limit(spec: dict[str, Any], environ: Any = None) -> int:
    env = os.environ if environ is None else environ
    return env_limit(env.get(NEW_TOKENS_ENV), spec.get("max_new_tokens_limit"), DEFAULT_MAX_NEW_TOKENS_LIMIT,
                     NEW_TOKENS_ENV)


def time_budget(spec: dict[str, Any], environ: Any = None) -> float | None:
    """Seconds one request may spend generating (None: unbounded but for the token limits). Set it a
    little under the deployment's timeout so a slow request answers what it has ("time_limit") instead
    of being killed."""
    env = os.environ if environ is None else environ
    raw = env.get(SECONDS_ENV) or spec.get("max_generation_s")
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{SECONDS_ENV} must be a positive number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{SECONDS_ENV} must be a positive number of seconds, got {value}")
    return value


def check_bounds(model: LoadedModel, items: list[Prompt], max_new_tokens: int, limits: RequestLimits | None) -> None:
    """413 before any work: new tokens, each prompt's context and the whole request's token budget."""
    limit = new_tokens_limit(model.spec)
    if max_new_tokens > limit:
        raise LimitError(f'"max_new_tokens" too large: {max_new_tokens} > {limit} per request '
                         f"(max_new_tokens_limit, {NEW_TOKENS_ENV})")
    window = int(model.spec.get("context_window") or 0)
    for index, item in enumerate(items):
        if window and len(item.ids) + max_new_tokens > window:
            raise LimitError(f"inputs[{index}] too long: {len(item.ids)} prompt tokens + {max_new_tokens} new tokens "
                             f"> the model's context window of {window} tokens")
    total = sum(len(item.ids) + max_new_tokens for item in items)
    if limits is not None and total > limits.max_tokens:
        raise LimitError(f"request too large: {total} tokens (prompts + max_new_tokens each) > {limits.max_tokens} "
                         "per request (max_tokens, SLIMSERVE_MAX_TOKENS): send fewer or shorter prompts")


# -- the model's feeds --------------------------------------------------------------------------------
def past_names(model: LoadedModel) -> dict[str, str]:
    """past input name -> the present output that feeds it on the next step."""
    pairs = {}
    for name in model.input_types:
        if name.startswith("past_key_values."):
            present = "present." + name[len("past_key_values."):]
            if present not in model.output_names:
                raise ValueError(f"the model has input {name} but no output {present}")
            pairs[name] = present
    return pairs


def empty_past(model: LoadedModel) -> dict[str, np.ndarray]:
    """Length-0 past tensors: (1, kv heads, 0, head dim) read from the graph (the manifest as fallback)."""
    fallback = model.spec.get("kv_shape") or {}
    feeds: dict[str, np.ndarray] = {}
    for arg in model.session.get_inputs():
        if not arg.name.startswith("past_key_values."):
            continue
        dims = list(arg.shape)
        shape = [1, dims[1] if isinstance(dims[1], int) else int(fallback["heads"]), 0,
                 dims[3] if isinstance(dims[3], int) else int(fallback["head_dim"])]
        feeds[arg.name] = np.zeros(shape, dtype=model.input_types[arg.name])
    return feeds


def step_feeds(model: LoadedModel, new_ids: list[int], total: int, past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds for `new_ids` following `total - len(new_ids)` cached tokens (all unpadded: mask of ones,
    positions counting on, as transformers derives them from the mask)."""
    start = total - len(new_ids)
    columns = {"input_ids": np.asarray([new_ids], dtype=np.int64),
               "attention_mask": np.ones((1, total), dtype=np.int64),
               "position_ids": np.arange(start, total, dtype=np.int64)[None]}
    feeds = dict(past)
    for name, dtype in model.input_types.items():
        if name in past:
            continue
        if name not in columns:
            raise InputError(f"model input {name!r} cannot be built for generation")
        feeds[name] = columns[name].astype(dtype, copy=False)
    return feeds


# -- choosing tokens (transformers' logits processors, in their order) ------------------------------
def repetition_penalty(scores: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    picked = scores[seen]
    scores[seen] = np.where(picked < 0, picked * penalty, picked / penalty)
    return scores


def top_k_filter(scores: np.ndarray, top_k: int) -> np.ndarray:
    k = min(max(top_k, 1), scores.shape[-1])
    kth = np.partition(scores, -k)[-k]
    return np.where(scores < kth, -np.inf, scores).astype(np.float32)


def top_p_filter(scores: np.ndarray, top_p: float) -> np.ndarray:
    order = np.argsort(scores, kind="stable")  # ascending, as transformers sorts
    ordered = scores[order].astype(np.float64)
    probs = np.exp(ordered - ordered.max())
    cumulative = np.cumsum(probs / probs.sum())
    remove = cumulative <= 1 - top_p
    remove[-1] = False  # min_tokens_to_keep = 1
    out = scores.copy()
    out[order[remove]] = -np.inf
    return out


def choose(logits: np.ndarray, sequence: list[int], settings: dict[str, Any], rng: random.Random) -> int:
    scores = np.array(logits, dtype=np.float32)
    penalty = float(settings["repetition_penalty"])
    if penalty != 1.0:
        scores = repetition_penalty(scores, np.unique(np.asarray(sequence, dtype=np.int64)), penalty)
    if not settings["do_sample"]:
        return int(np.argmax(scores))
    temperature = float(settings["temperature"])
    if temperature != 1.0:
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = scores / np.float32(temperature)
        if np.isposinf(scaled).any() or np.isnan(scaled).any():  # so small a temperature is greedy
            return int(np.argmax(scores))
        scores = scaled
    if settings["top_k"]:
        scores = top_k_filter(scores, int(settings["top_k"]))
    if float(settings["top_p"]) < 1.0:
        scores = top_p_filter(scores, float(settings["top_p"]))
    finite = scores.astype(np.float64)
    probs = np.exp(finite - finite.max())
    cumulative = np.cumsum(probs)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, int(scores.shape[-1]) - 1)


# -- text ---------------------------------------------------------------------------------------------
def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization`, which the text-generation pipeline always applies."""
    return (text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",").replace(" ' ", "'")
            .replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s").replace(" 've", "'ve")
            .replace(" 're", "'re"))


def decode_text(model: LoadedModel, ids: list[int]) -> str:
    return clean_up_tokenization(str(model.tokenizer.decode(ids, skip_special_tokens=True)))


def new_text(model: LoadedModel, prompt_ids: list[int], generated: list[int]) -> str:
    """The pipeline's NEW_TEXT: the whole sequence decoded, minus the decoded prompt's length."""
    return decode_text(model, prompt_ids + generated)[len(decode_text(model, prompt_ids)):]


def stopped(model: LoadedModel, prompt_ids: list[int], generated: list[int], stop: list[str]) -> bool:
    """A stop string ends in the generated text (it may begin in the prompt, as transformers' stop_strings
    match on the whole sequence's end). Checked after every token, so the first match ends generation."""
    full = decode_text(model, prompt_ids + generated)
    start = len(decode_text(model, prompt_ids))
    return any(s in full[max(0, start - len(s) + 1):] for s in stop)


# -- the loop -----------------------------------------------------------------------------------------
@dataclass
class Run:
    """One prompt's generation so far (what `steps` yields after every token)."""

    prompt: Prompt
    generated: list[int]
    reason: str | None = None  # set on the last step: length | eos_token | stop_sequence | time_limit
    started: float = 0.0
    first_token_s: float = 0.0

    def timings(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        rest, count = seconds - self.first_token_s, len(self.generated)
        return {"time_to_first_token_s": round(self.first_token_s, 6), "seconds": round(seconds, 6),
                "tokens_per_s": round((count - 1) / rest, 3) if count > 1 and rest > 0 else None}


def steps(model: LoadedModel, prompt: Prompt, max_new_tokens: int, settings: dict[str, Any], stop: list[str],
          rng: random.Random, *, stop_at_eos: bool = True, deadline: float | None = None) -> Iterator[Run]:
    """The generate loop, one yield per new token: the prompt runs once with an empty past, then each
    step feeds only the new token with the previous step's presents as the past. The last yield has
    `reason` set. (`stop_at_eos` False: exactly `max_new_tokens`, as fidelity's greedy-prefix comparison
    wants; past `deadline`, a perf_counter time, generation ends with what it has: "time_limit".)"""
    eos = {int(i) for i in model.spec.get("eos_token_ids") or []} if stop_at_eos else set()
    min_new = int(settings.get("min_new_tokens") or 0)
    names = past_names(model)
    run = Run(prompt=prompt, generated=[], started=time.perf_counter())
    sequence = list(prompt.ids)
    past = empty_past(model)
    new_ids = list(prompt.ids)
    while True:
        outputs = model.run(step_feeds(model, new_ids, len(sequence), past))
        logits = np.asarray(outputs["logits"][0, -1], dtype=np.float32)
        if eos and len(run.generated) < min_new:  # transformers' MinNewTokensLengthLogitsProcessor
            logits = logits.copy()
            logits[sorted(i for i in eos if i < logits.shape[-1])] = -np.inf
        token = choose(logits, sequence, settings, rng)
        if not run.generated:
            run.first_token_s = time.perf_counter() - run.started
        run.generated.append(token)
        sequence.append(token)
        if token in eos:
            run.reason = "eos_token"
        elif stop and stopped(model, prompt.ids, run.generated, stop):
            run.reason = "stop_sequence"
        elif len(run.generated) >= max_new_tokens:
            run.reason = "length"
        elif deadline is not None and time.perf_counter() > deadline:
            run.reason = "time_limit"
        yield run
        if run.reason is not None:
            return
        past = {name: outputs[present] for name, present in names.items()}
        new_ids = [token]


def generate(model: LoadedModel, prompt: Prompt, max_new_tokens: int, settings: dict[str, Any],
             stop: list[str], rng: random.Random, *, stop_at_eos: bool = True, deadline: float | None = None,
             ) -> tuple[list[int], str, dict[str, Any]]:
    """Generated ids, why generation ended and timings (the whole loop of `steps`)."""
    run = Run(prompt=prompt, generated=[])
    for run in steps(model, prompt, max_new_tokens, settings, stop, rng, stop_at_eos=stop_at_eos, deadline=deadline):
        pass
    return run.generated, str(run.reason), run.timings()


def full_text(item: Prompt, text: str) -> Any:
    """The pipeline's FULL_TEXT: the prompt and the new text; for a chat, the messages with the answer
    as a new assistant message (or appended to a final assistant message, which was continued)."""
    if item.chat is None:
        return item.text + text
    if item.chat[-1]["role"] == "assistant":
        return [*item.chat[:-1], {"role": "assistant", "content": item.chat[-1]["content"] + text}]
    return [*item.chat, {"role": "assistant", "content": text}]


def _answer(model: LoadedModel, run: Run, parameters: dict[str, Any]) -> dict[str, Any]:
    text = new_text(model, run.prompt.ids, run.generated)
    answer: dict[str, Any] = {"generated_text": full_text(run.prompt, text) if parameters["return_full_text"] else text}
    if parameters["details"]:
        answer["details"] = {"finish_reason": run.reason, "prompt_tokens": len(run.prompt.ids),
                             "generated_tokens": len(run.generated), "token_ids": list(run.generated),
                             **run.timings()}
    return answer


def _prepare(model: LoadedModel, inputs: Any, parameters: dict[str, Any],
             limits: RequestLimits | None) -> tuple[list[Prompt], Callable[[Prompt], Iterator[Run]]]:
    """Validate the whole request (400/413 before any generation): its prompts, and a runner for each."""
    texts, _single = prompts(inputs)
    items = _encode_prompts(model, texts, limits)
    max_new = int(parameters["max_new_tokens"])
    check_bounds(model, items, max_new, limits)
    settings = {**sampling(model, parameters), "min_new_tokens": parameters["min_new_tokens"]}
    rng = random.Random(parameters["seed"])  # stdlib: the slim layer ships numpy without numpy.random
    budget = time_budget(model.spec)
    deadline = None if budget is None else time.perf_counter() + budget

    def run(item: Prompt) -> Iterator[Run]:
        return steps(model, item, max_new, settings, parameters["stop"], rng, deadline=deadline)

    return items, run


def predict(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Any:
    items, runner = _prepare(model, inputs, parameters, limits)
    answers = []
    for item in items:
        run = Run(prompt=item, generated=[])
        for run in runner(item):
            pass
        answers.append(_answer(model, run, parameters))
    return answers


def _held_back(text: str) -> int:
    """How much of `text` a stream may send now: not a trailing replacement character (a multi-byte
    character still incomplete) nor a trailing space-led fragment (" n't", " ." ...) that transformers'
    clean-up may still rewrite once the next token arrives."""
    cut = len(text)
    if text.endswith("\ufffd"):
        cut = len(text.rstrip("\ufffd"))
    space = text.rfind(" ", max(0, cut - 4), cut)
    return space if space >= 0 else cut


def stream(model: LoadedModel, inputs: Any, parameters: Any = None,
           limits: RequestLimits | None = None) -> Iterator[dict[str, Any]]:
    """Token events as they are produced, for a streaming front (server-sent events), shaped like
    text-generation-inference's: `{"index", "token": {"id", "text", "special"}, "generated_text": null,
    "details": null}` per token, the last token of each prompt carrying `generated_text` (and `details`)
    as `predict` answers it. The texts of one prompt's events add up to its `generated_text` (new text).
    The request is validated before this returns (InputError/LimitError: answer 400/413, not a stream)."""
    values = model.parameters(parameters)
    items, runner = _prepare(model, inputs, values, limits)
    eos = {int(i) for i in model.spec.get("eos_token_ids") or []}

    def events() -> Iterator[dict[str, Any]]:
        for index, item in enumerate(items):
            sent = 0
            for run in runner(item):
                token = run.generated[-1]
                text = new_text(model, item.ids, run.generated)
                last = run.reason is not None
                cut = len(text) if last else _held_back(text)
                delta, sent = text[sent:max(cut, sent)], max(cut, sent)
                event: dict[str, Any] = {"index": index, "token": {"id": token, "text": delta, "special": token in eos},
                                         "generated_text": None, "details": None}
                if last:
                    answer = _answer(model, run, values)
                    event.update(generated_text=answer["generated_text"], details=answer.get("details"))
                yield event

    return events()


# -- evaluation: the prompt teacher-forced in one run (the family's fidelity reads its logits) -------
def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    """One prompt as a single forward pass with an empty past: what slimserve's evaluation runs on both
    models (every position's next-token logits). Serving goes through `predict`."""
    texts, single = prompts(inputs)
    items = _encode_prompts(model, texts, limits)
    if len(items) != 1:
        raise InputError("evaluation encodes one prompt per request")
    item = items[0]
    feeds = step_feeds(model, item.ids, len(item.ids), empty_past(model))
    return Encoded(feeds=feeds, count=1, context=item, single=single)


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    """The greedy next token at every prompt position (what teacher-forced fidelity compares)."""
    logits = np.asarray(outputs["logits"], dtype=np.float32)[0]
    return [int(t) for t in np.argmax(logits, axis=-1)]
