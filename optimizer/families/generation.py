"""Text generation (decoder-only causal LMs): export additions, the PyTorch reference and next-token fidelity.

Fidelity is judged teacher-forced, on what decides every generated token: each built-in (or --eval)
prompt runs once through the candidate (the shipped runtime's own feeds, an empty past) and through the
original PyTorch model, and at every prompt position the candidate's top-1 next token is compared with
the original's. Per prompt, `next_token_agreement` is the fraction of positions that agree; `mean`/`min`
are over prompts. `details` adds the logit cosine per position (mean and worst) and greedy-decode
agreement: the original greedily continues each prompt for GREEDY_TOKENS tokens with its own KV cache
(a plain torch loop, not slimserve's), the candidate does the same through the shipped generate loop,
and the identical prefix's length is reported (mean, and the share of prompts identical throughout).
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer.exported import ReferenceRunner
from slimserve.optimizer.families.base import EvalBatch, EvalSet
from slimserve.optimizer.fidelity import Fidelity
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime import task_generation
from slimserve.runtime.model_runtime import CHARS_PER_TOKEN, LoadedModel, RequestLimits

BUILTIN_EVAL = "gen_eval.jsonl"
BUILTIN_CALIB = "gen_calib.jsonl"
GREEDY_TOKENS = 16
MAX_BATCH = 8            # prompts per request: they run one after another
MAX_REQUEST_TOKENS = 2048  # prompts + new tokens per request (each prompt also within the context window)
SAMPLE_PROMPT = "Serverless inference should start fast because"
WORST_FILLER = ("Cold starts, memory and tokens per second decide what a small model costs on Lambda; "
                "see run #A-17/b (2,417 tokens at 56.12 tok/s). ")
EVAL_HINT = 'the --eval file takes JSON lines like {"text": "a prompt"}'
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length",
                "max_seq_len")  # the last: MPT
# transformers' "no limit known" model_max_length (int(1e30)) and anything past a million tokens is no window.
MAX_TOKENIZER_WINDOW = 1 << 20
GENERATION_KEYS = tuple(task_generation.SAMPLING_DEFAULTS)


def read_prompts(text: str, origin: str) -> list[str]:
    """JSON lines of {"text": "..."}: one clear error naming the line if one is not."""
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise SlimserveError(f"{origin} line {number} is not JSON", hint=EVAL_HINT) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
            raise SlimserveError(f"{origin} line {number} needs a non-empty string field 'text'", hint=EVAL_HINT)
        prompts.append(record["text"])
    if not prompts:
        raise SlimserveError(f"{origin} holds no prompts", hint=EVAL_HINT)
    return prompts


def builtin_prompts(name: str) -> list[str]:
    data = resources.files("slimserve.optimizer").joinpath("data", name).read_text(encoding="utf-8")
    return read_prompts(data, f"built-in {name}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _config_value(config: dict[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    text_config = config.get("text_config")
    return _config_value(text_config, keys) if isinstance(text_config, dict) else None


def context_window(folder: Path, config: dict[str, Any]) -> int | None:
    """The model's context window: config.json's (CONTEXT_KEYS), else the tokenizer's `model_max_length`
    (ALiBi models such as BLOOM have no position table, so their config names no window; their tokenizer
    carries the length they were trained at). None when neither says."""
    window = _config_value(config, CONTEXT_KEYS)
    if window is not None:
        return window
    length = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(length, int) and not isinstance(length, bool) and 0 < length <= MAX_TOKENIZER_WINDOW:
        return length
    return None


def _eos_ids(generation: dict[str, Any], config: dict[str, Any]) -> list[int]:
    """generation_config's eos_token_id (what generate stops on), else the model config's."""
    raw = generation.get("eos_token_id", config.get("eos_token_id"))
    items = raw if isinstance(raw, list) else [raw]
    return [int(i) for i in items if isinstance(i, int) and not isinstance(i, bool)]


def generation_defaults(generation: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json's sampling settings that generate would use, each of the type it must have."""
    checks = {"do_sample": lambda v: isinstance(v, bool), "top_k": lambda v: isinstance(v, int) and v >= 0,
              "temperature": lambda v: isinstance(v, (int, float)) and v >= 0,
              "top_p": lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
              "repetition_penalty": lambda v: isinstance(v, (int, float)) and v > 0}
    return {key: generation[key] for key in GENERATION_KEYS
            if generation.get(key) is not None and not (isinstance(generation[key], bool) and key != "do_sample")
            and checks[key](generation[key])}


PROBES = ("Hello world", "  leading spaces", "é 東京 😀", "a")


def special_tokens(source: HfFolderSource, tokenizer_file: Path) -> dict[str, list[int]] | None:
    """The ids transformers' tokenizer puts around a prompt (the text-generation pipeline calls it with
    its defaults), measured on probes against tokenizer.json without special tokens; None when they are
    not one fixed prefix/suffix (the handler then uses tokenizer.json's own post-processor)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(tokenizer_file))
    raw.no_padding()
    raw.no_truncation()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), local_files_only=True,  # type: ignore[no-untyped-call]  # transformers is untyped
                                                  trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError):
        return None
    found: dict[str, list[int]] | None = None
    for probe in PROBES:
        full = [int(i) for i in tokenizer(probe)["input_ids"]]
        inner = raw.encode(probe, add_special_tokens=False).ids
        starts = [i for i in range(len(full) - len(inner) + 1) if full[i:i + len(inner)] == inner]
        if not starts:
            return None
        around = {"prefix": full[:starts[0]], "suffix": full[starts[0] + len(inner):]}
        if found not in (None, around):
            return None
        found = around
    return found


def worst_prompt_chars(tokenizer_file: Path, tokens: int, max_chars: int, add_special_tokens: bool) -> tuple[int, int]:
    """The longest prefix of the filler (in characters) that tokenizes to at most `tokens` tokens, by
    bisection with the tokenizer the handler ships, and its length in tokens (more than `tokens` only when
    one character with the special tokens already is)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.no_truncation()
    filler = WORST_FILLER * (max_chars // len(WORST_FILLER) + 1)

    def count(chars: int) -> int:
        return len(tok.encode(filler[:chars], add_special_tokens=add_special_tokens).ids)

    low, high = 1, max_chars
    if count(high) <= tokens:
        return high, count(high)
    while low < high:
        middle = (low + high + 1) // 2
        if count(middle) <= tokens:
            low = middle
        else:
            high = middle - 1
    return low, count(low)


class GenerationFamily:
    tasks = task_generation.TASKS

    def check_source(self, source: HfFolderSource) -> None:
        """Refuse before the export what the generate loop cannot serve: no tokenizer, no context size."""
        config = _read_json(source.path / "config.json")
        if not (source.path / "tokenizer.json").is_file():
            raise SlimserveError(f"{source.path} has no tokenizer.json: text generation needs a fast tokenizer",
                                 hint="save the model's tokenizer with transformers (a fast tokenizer) first")
        if context_window(source.path, config) is None:
            raise SlimserveError(f"{source.path}/config.json does not say the model's context window "
                                 f"(none of {', '.join(CONTEXT_KEYS)}), nor does tokenizer_config.json "
                                 "(model_max_length)",
                                 hint='add "max_position_embeddings": N to config.json, N the longest sequence '
                                      "the model was trained on (generation is refused beyond it)")

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        """The base text spec plus what generate reads from the configs: the context window, EOS ids,
        the sampling defaults of generation_config.json, the KV shape, and the generation limits."""
        if not base.get("tokenizer"):
            raise SlimserveError(f"{source.path} has no tokenizer: text generation needs one",
                                 hint="save the model's tokenizer (tokenizer.json) in the folder")
        config = _read_json(export_dir / "config.json") or _read_json(source.path / "config.json")
        generation = _read_json(source.path / "generation_config.json")
        window = (context_window(export_dir, config) or context_window(source.path, config)
                  or task_generation.DEFAULT_MAX_NEW_TOKENS_LIMIT * 8)
        heads = _config_value(config, ("num_key_value_heads", "num_attention_heads", "n_head"))
        head_dim = _config_value(config, ("head_dim",))
        hidden = _config_value(config, ("hidden_size", "n_embd"))
        attention_heads = _config_value(config, ("num_attention_heads", "n_head"))
        if head_dim is None and hidden and attention_heads:
            head_dim = hidden // attention_heads
        max_tokens = MAX_REQUEST_TOKENS  # all prompts' tokens + new tokens; each prompt also within the window
        longest = min(window, max_tokens)  # the longest single prompt + its new tokens
        spec = {key: value for key, value in base.items() if key not in ("output", "pooling", "normalize")}
        spec.update({
            "labels": None, "outputs": ["logits"], "context_window": window, "max_length": window,
            "eos_token_ids": _eos_ids(generation, config),
            "generation_defaults": generation_defaults(generation),
            "kv_shape": {"heads": heads, "head_dim": head_dim},
            "special_tokens": special_tokens(source, export_dir / str(base["tokenizer"])),
            "max_new_tokens_limit": min(task_generation.DEFAULT_MAX_NEW_TOKENS_LIMIT, max(1, window - 1)),
            "max_batch": MAX_BATCH, "max_tokens": max_tokens, "max_chars": longest * CHARS_PER_TOKEN,
        })
        chat, why = self._chat_format(source)
        spec.update({"chat": chat, "chat_unsupported": why or None})
        # The worst request asks for every new token the limit allows (decode steps cost far more per token
        # than the prompt's), its prompt filling the rest of the window.
        worst_new = min(int(spec["max_new_tokens_limit"]), max(1, longest - 1))
        chars, prompt_tokens = worst_prompt_chars(export_dir / str(spec["tokenizer"]), max(1, longest - worst_new),
                                                  int(spec["max_chars"]), True)
        spec["worst_prompt_chars"] = chars
        spec["worst_new_tokens"] = max(1, min(worst_new, longest - prompt_tokens))
        return spec

    @staticmethod
    def _chat_format(source: HfFolderSource) -> tuple[dict[str, Any] | None, str]:
        """The folder's chat template pre-rendered for the handler (optimizer/chat_format.py explains how),
        or why chat input will be refused."""
        from transformers import AutoTokenizer

        from slimserve.optimizer import chat_format

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source.path), local_files_only=True,  # type: ignore[no-untyped-call]  # transformers is untyped
                                                      trust_remote_code=source.trust_remote_code)
        except (OSError, ValueError) as exc:
            return None, f"its tokenizer could not be loaded with transformers: {first_line(exc)}"
        return chat_format.extract(tokenizer)

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """One short prompt (default parameters: greedy, 32 new tokens); `batch` > 1: a list of that many."""
        return SAMPLE_PROMPT if batch == 1 else [SAMPLE_PROMPT] * batch

    def sample_parameters(self, runtime: dict[str, Any]) -> dict[str, Any]:
        """The typical request generates all its default new tokens (a random or terse model may otherwise
        stop at EOS after one, and time-to-first-token and tokens/s would measure nothing)."""
        new = int(task_generation.PARAMETERS["text-generation"]["max_new_tokens"])
        return {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}

    def worst_parameters(self, runtime: dict[str, Any]) -> dict[str, Any]:
        new = self._worst_new_tokens(runtime)
        return {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}

    @staticmethod
    def _worst_new_tokens(runtime: dict[str, Any]) -> int:
        """Manifests written before `worst_new_tokens` sized their worst prompt for the default 32."""
        return int(runtime.get("worst_new_tokens") or task_generation.PARAMETERS["text-generation"]["max_new_tokens"])

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """One prompt as long as the token budget allows beside max_new_tokens_limit new tokens (its length
        in characters measured with the model's tokenizer when the manifest was written); EOS is held off
        (`worst_parameters`), so every one of them is generated."""
        chars = min(int(runtime.get("worst_prompt_chars") or len(SAMPLE_PROMPT)), limits.max_chars)
        prompt = (WORST_FILLER * (chars // len(WORST_FILLER) + 1))[:chars]
        new = self._worst_new_tokens(runtime)
        longest = min(int(runtime.get("context_window") or limits.max_tokens), limits.max_tokens)
        return prompt, f"1 prompt × {chars:,} characters (≤ {longest - new} tokens) + {new} new tokens"

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        """AutoModelForCausalLM on the prompt's feeds (no past): every position's logits, plus a greedy
        continuation of GREEDY_TOKENS tokens by its own KV-cache loop (`greedy_ids`)."""
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        warnings.filterwarnings("ignore", message=".*torch_dtype.*")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(source.path), use_safetensors=not source.allow_pickle or None, local_files_only=True,
                trust_remote_code=source.trust_remote_code)
            model.eval()  # type: ignore[no-untyped-call]  # transformers is untyped
        except (OSError, ValueError, RuntimeError) as exc:
            raise ToolError(f"cannot load {source.path} with PyTorch for the reference outputs: "
                            f"{first_line(exc)}") from exc

        def run(feed: Any) -> dict[str, np.ndarray]:
            ids = torch.from_numpy(np.asarray(feed["input_ids"], dtype=np.int64))
            mask = torch.ones_like(ids)
            with torch.inference_mode():
                out = model(input_ids=ids, attention_mask=mask, use_cache=True)
                logits = out.logits.float()
                past, greedy = out.past_key_values, []
                token = logits[:, -1].argmax(-1, keepdim=True)
                for _ in range(GREEDY_TOKENS):
                    greedy.append(int(token[0, 0]))
                    mask = torch.cat([mask, torch.ones_like(token)], dim=1)
                    step = model(input_ids=token, attention_mask=mask, past_key_values=past, use_cache=True)
                    past = step.past_key_values
                    token = step.logits[:, -1].float().argmax(-1, keepdim=True)
            return {"logits": logits.numpy(), "greedy_ids": np.asarray(greedy, dtype=np.int64)}

        return run

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        """One prompt per request: the built-in prompts (calibration kept apart), or the user's JSON lines."""
        if eval_path is not None:
            try:
                content = Path(eval_path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SlimserveError(f"cannot read --eval file {eval_path}: {exc}", hint=EVAL_HINT) from None
            prompts = read_prompts(content, str(eval_path))
            return EvalSet(requests=list(prompts), calibration=list(prompts),
                           description=f"{eval_path} ({len(prompts)} prompts)")
        prompts = builtin_prompts(BUILTIN_EVAL)
        return EvalSet(requests=prompts, calibration=builtin_prompts(BUILTIN_CALIB),
                       description=f"built-in {BUILTIN_EVAL} ({len(prompts)} prompts)")

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        agreement: list[float] = []
        cosines: list[float] = []
        prefixes: list[int] = []
        greedy = {"do_sample": False, "repetition_penalty": 1.0}
        rng = random.Random(0)  # unused: greedy
        for batch in batches:
            ref_logits = np.asarray(batch.reference["logits"], dtype=np.float64)[0]
            cand_logits = np.asarray(batch.candidate["logits"], dtype=np.float64)[0]
            if ref_logits.shape != cand_logits.shape:
                raise ValueError(f"output logits changed shape: {ref_logits.shape} -> {cand_logits.shape}")
            agreement.append(float(np.mean(ref_logits.argmax(-1) == cand_logits.argmax(-1))))
            norms = np.linalg.norm(ref_logits, axis=-1) * np.linalg.norm(cand_logits, axis=-1)
            dots = (ref_logits * cand_logits).sum(-1)
            cosines.extend(np.clip(np.where(norms == 0, 1.0, dots / np.where(norms == 0, 1.0, norms)), -1, 1).tolist())
            want = [int(t) for t in batch.reference["greedy_ids"]]
            got, _, _ = task_generation.generate(model, batch.encoded.context, len(want), greedy, [], rng,
                                                 stop_at_eos=False)
            same = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), len(want))
            prefixes.append(same)
        if not agreement:
            raise ValueError("no evaluation prompts")
        details = {"logit_cosine_mean": round(float(np.mean(cosines)), 6),
                   "logit_cosine_min": round(float(np.min(cosines)), 6),
                   "positions": float(len(cosines)),
                   "greedy_tokens": float(GREEDY_TOKENS),
                   "greedy_prefix_mean": round(float(np.mean(prefixes)), 3),
                   "greedy_prefix_min": float(min(prefixes)),
                   "greedy_identical": round(float(np.mean([p == GREEDY_TOKENS for p in prefixes])), 6)}
        return Fidelity(metric="next_token_agreement", output="logits", mean=round(float(np.mean(agreement)), 6),
                        min=round(float(np.min(agreement)), 6), samples=len(agreement), reference=reference_name,
                        eval_source=eval_source, details=details)


FAMILY = GenerationFamily()
