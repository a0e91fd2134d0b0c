"""Text generation (issue 13): the shipped generate loop against transformers' own `generate` and pipeline.

Two tiny random-initialised decoder-only architectures from their configs (no hub): Llama (grouped-query
attention, 2 KV heads, a tokenizer that adds a BOS token) and GPT-2 (a byte-level BPE tokenizer adding
nothing, EOS = BOS). Both tokenizers are byte-level BPE trained here on a few sentences. Every answer of
slimserve's runtime (`task_generation`, running slimserve's ONNX export with its KV cache) is compared with
the original PyTorch model: greedy token ids with `model.generate(do_sample=False)`, text with
`pipeline("text-generation")`, the sampling filters with transformers' own logits processors.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimserve.packagers.interpreters import find_python
from slimserve.runtime.model_runtime import InputError, LimitError, LoadedModel
from tests.conftest import assert_clean_error, require, run_cli
from tests.helpers_lambda import run_like_lambda

TRAIN_TEXT = ["The quick brown fox jumps over the lazy dog.", "Serverless inference scales to zero when idle.",
              "Small language models run on CPUs with 4-bit weights.", "Once upon a time, there was a keeper!",
              "What's the weather like today? It's sunny, isn't it?", "def f(x):\n    return x * 2\n"] * 20
PROMPTS = ["The quick brown fox", "Once upon a time, there was", "Q: What's the weather like?\nA:",
           "def f(x):\n", "Serverless"]
NEW_TOKENS = 32
ARCHS = ("llama", "gpt2")
# Real templates' shapes: ChatML with Qwen2.5's default system prompt, Llama 3's (BOS, trimmed contents),
# Zephyr's (the generation prompt inside the loop), Mistral's (no system role, strict alternation).
CHATML = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + "
          "'<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
          "helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if (message.role == "
          "'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}{{- "
          "'<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}"
          "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] "
           "== 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
           "roles are supported!') }}{% endif %}{% endfor %}")
UPPER = ("{% for m in messages %}{{ m.role + ': ' + (m.content | upper) + '\n' }}{% endfor %}"
         "{% if add_generation_prompt %}assistant:{% endif %}")
TEMPLATES = {"llama": CHATML, "gpt2": LLAMA3}
CHATS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What's the weather like?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  Hello there!  "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "Tell me a story\nabout a fox."}],
    [{"role": "user", "content": "Finish this:"}, {"role": "assistant", "content": "Once upon a time, "}],  # continued
]


def _tokenizer(bos: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>"] if bos else ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TRAIN_TEXT, trainer)
    names = ["input_ids", "attention_mask"]
    if bos:  # Llama-style: the tokenizer adds <s> in front of every prompt
        bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bpe.token_to_id("<s>"))])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                            model_input_names=names)
    else:
        bpe.post_processor = processors.ByteLevel(trim_offsets=False)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                            eos_token="<|endoftext|>", model_input_names=names)
    tokenizer.model_max_length = 256
    return tokenizer


def _build(folder: Path, arch: str, eos_token_id: int | None = None, chat_template: str | None = None) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _tokenizer(bos=arch == "llama")
    model: Any
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    if eos_token_id is not None:
        model.generation_config.eos_token_id = eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def build(arch: str) -> Path:
        if arch not in built:
            built[arch] = _build(tmp_path_factory.mktemp(arch) / "model", arch, chat_template=TEMPLATES[arch])
        return built[arch]

    return build


@pytest.fixture(scope="module")
def optimized(folder: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """(arch, recipe) -> the `slimserve optimize` output folder, built once per module."""
    built: dict[tuple[str, str], Path] = {}

    def build(arch: str, recipe: str) -> Path:
        if (arch, recipe) not in built:
            out = tmp_path_factory.mktemp(f"{arch}-{recipe}") / "out"
            result = run_cli("optimize", str(folder(arch)), "-o", str(out), "--recipe", recipe, "--format", "json")
            assert result.returncode == 0, result.stderr
            built[(arch, recipe)] = out
        return built[(arch, recipe)]

    return build


@pytest.fixture(scope="module")
def torch_model(folder: Callable[[str], Path]) -> Callable[[str], tuple[Any, Any]]:
    """arch -> (PyTorch model, transformers tokenizer), loaded from the folder slimserve was given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    made: dict[str, tuple[Any, Any]] = {}

    def load(arch: str) -> tuple[Any, Any]:
        if arch not in made:
            model = AutoModelForCausalLM.from_pretrained(folder(arch))
            model.eval()
            made[arch] = (model, AutoTokenizer.from_pretrained(folder(arch)))
        return made[arch]

    return load


def _generate(model: Any, tok: Any, prompt: str, **kwargs: Any) -> list[int]:
    """transformers' generate on one prompt: the new token ids."""
    import torch

    encoded = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=NEW_TOKENS, pad_token_id=tok.eos_token_id, **kwargs)
    return [int(t) for t in out[0, encoded["input_ids"].shape[1]:]]


# -- greedy: token-identical to transformers ----------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_is_token_identical_to_generate_and_text_to_the_pipeline(
        arch: str, optimized: Callable[[str, str], Path], torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    from transformers import pipeline

    model, tokenizer = torch_model(arch)
    runtime = LoadedModel(optimized(arch, "fp32"))
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    answers = runtime.predict(PROMPTS, {"max_new_tokens": NEW_TOKENS})
    assert len(answers) == len(PROMPTS)
    for prompt, answer in zip(PROMPTS, answers):
        expected = _generate(model, tokenizer, prompt, do_sample=False)
        assert answer["details"]["token_ids"] == expected, prompt
        assert answer["details"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
        new = pipe(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, return_full_text=False)[0]["generated_text"]
        assert answer["generated_text"] == new
        full = runtime.predict(prompt, {"max_new_tokens": NEW_TOKENS, "return_full_text": True, "details": False})
        assert full == pipe(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)  # no details: the pipeline's shape
    fidelity = json.loads((optimized(arch, "fp32") / "slimserve.json").read_text())["fidelity"]
    assert fidelity["metric"] == "next_token_agreement" and fidelity["mean"] == fidelity["min"] == 1.0
    assert fidelity["details"]["greedy_identical"] == 1.0 and fidelity["details"]["logit_cosine_min"] > 0.9999


@pytest.mark.parametrize(("config_name", "model_name"), [("Qwen2Config", "Qwen2ForCausalLM"),
                                                        ("Phi3Config", "Phi3ForCausalLM"),
                                                        ("GemmaConfig", "GemmaForCausalLM")])
def test_more_decoder_architectures_generate_like_transformers(config_name: str, model_name: str,
                                                               tmp_path: Path) -> None:
    """Qwen2 (QKV biases), Phi-3 (fused QKV and gate/up projections), Gemma (scaled embeddings, explicit
    head_dim): export with KV cache, fidelity 1.0, greedy ids identical to generate."""
    import torch
    import transformers

    torch.manual_seed(0)
    tokenizer = _tokenizer(bos=True)
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = getattr(transformers, model_name)(config)
    model.eval()
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    result = run_cli("optimize", str(tmp_path / "model"), "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "slimserve.json").read_text())
    assert manifest["source"]["task"] == "text-generation" and manifest["fidelity"]["mean"] == 1.0
    assert manifest["fidelity"]["details"]["greedy_identical"] == 1.0
    answers = LoadedModel(out).predict(PROMPTS, {"max_new_tokens": NEW_TOKENS})
    for prompt, answer in zip(PROMPTS, answers):
        assert answer["details"]["token_ids"] == _generate(model, tokenizer, prompt, do_sample=False), prompt


# Decoders whose attention, KV cache or config differ from Llama's; kwargs beyond vocabulary and special ids.
OTHER_DECODERS = {
    "bloom": ("BloomConfig", "BloomForCausalLM", {"hidden_size": 32, "n_layer": 2, "n_head": 4}),  # ALiBi, no window
    "mpt": ("MptConfig", "MptForCausalLM", {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 256}),
    "gpt_bigcode": ("GPTBigCodeConfig", "GPTBigCodeForCausalLM",  # multi-query, one fused key/value cache
                    {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "falcon": ("FalconConfig", "FalconForCausalLM", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                                     "multi_query": True, "new_decoder_architecture": False,
                                                     "max_position_embeddings": 256}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                                         "num_attention_heads": 4, "max_position_embeddings": 256}),
    "opt": ("OPTConfig", "OPTForCausalLM", {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                            "max_position_embeddings": 256, "word_embed_proj_dim": 32}),
}


def _other_decoder(name: str, folder: Path, tokenizer_window: int | None = 256) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    tokenizer = _tokenizer(bos=True)
    if tokenizer_window is None:
        tokenizer.model_max_length = int(1e30)  # what transformers writes when nobody said
    config_name, model_name, kwargs = OTHER_DECODERS[name]
    config = getattr(transformers, config_name)(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id, **kwargs)
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.mark.parametrize("name", sorted(OTHER_DECODERS))
def test_other_decoder_families_generate_like_transformers(name: str, tmp_path: Path) -> None:
    """BLOOM (ALiBi: no position table, so the window comes from the tokenizer), MPT (`max_seq_len`),
    GPT-BigCode (multi-query attention with one fused key/value cache), Falcon (multi-query), GPT-NeoX,
    OPT (learned positions offset by 2): greedy ids identical to generate."""
    model, tokenizer = _other_decoder(name, tmp_path / "model")
    out = tmp_path / "out"
    result = run_cli("optimize", str(tmp_path / "model"), "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "slimserve.json").read_text())
    assert manifest["source"]["task"] == "text-generation" and manifest["fidelity"]["mean"] == 1.0
    assert manifest["runtime"]["context_window"] == 256
    answers = LoadedModel(out).predict(PROMPTS, {"max_new_tokens": NEW_TOKENS})
    for prompt, answer in zip(PROMPTS, answers):
        assert answer["details"]["token_ids"] == _generate(model, tokenizer, prompt, do_sample=False), prompt


def test_a_decoder_without_a_known_context_window_is_refused_with_a_hint(tmp_path: Path) -> None:
    _other_decoder("bloom", tmp_path / "model", tokenizer_window=None)
    result = run_cli("optimize", str(tmp_path / "model"), "-o", str(tmp_path / "out"), "--recipe", "fp32")
    assert_clean_error(result, contains="context window")
    assert "max_position_embeddings" in result.stderr and not (tmp_path / "out").exists()


def test_special_tokens_transformers_adds_from_the_config_are_added(folder: Callable[[str], Path], tmp_path: Path,
                                                                     torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    """A Llama tokenizer whose tokenizer.json adds nothing, but whose tokenizer_config.json says
    add_bos_token (transformers' LlamaTokenizerFast then adds BOS itself): prompts get the BOS too (the
    manifest records the ids transformers puts around a prompt; the export's re-saved tokenizer.json
    also carries them)."""
    from transformers import AutoTokenizer

    source = tmp_path / "model"
    shutil.copytree(folder("llama"), source)
    tokenizer_json = json.loads((source / "tokenizer.json").read_text())
    tokenizer_json["post_processor"] = None
    (source / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="LlamaTokenizerFast", add_bos_token=True, add_eos_token=False, legacy=True)
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(source)
    assert tokenizer("Hi")["input_ids"][0] == tokenizer.bos_token_id
    out = tmp_path / "out"
    result = run_cli("optimize", str(source), "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    model, _ = torch_model("llama")
    for prompt, answer in zip(PROMPTS, LoadedModel(out).predict(PROMPTS, {"max_new_tokens": NEW_TOKENS})):
        assert answer["details"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
        assert answer["details"]["token_ids"] == _generate(model, tokenizer, prompt, do_sample=False), prompt


def test_repetition_penalty_greedy_matches_generate(optimized: Callable[[str, str], Path],
                                                    torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    model, tokenizer = torch_model("llama")
    runtime = LoadedModel(optimized("llama", "fp32"))
    for prompt in PROMPTS[:3]:
        answer = runtime.predict(prompt, {"max_new_tokens": NEW_TOKENS, "repetition_penalty": 1.5})[0]
        assert answer["details"]["token_ids"] == _generate(model, tokenizer, prompt, do_sample=False,
                                                           repetition_penalty=1.5)


def test_sampling_filters_match_transformers_processors() -> None:
    """Temperature, top-k, top-p and the repetition penalty against transformers' own processors."""
    import torch
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from slimserve.runtime import task_generation as gen

    rng = np.random.default_rng(3)
    for _ in range(20):
        logits = rng.normal(size=400).astype(np.float32) * 3
        seen = rng.integers(0, 400, size=30)
        ids = torch.from_numpy(seen)[None]
        ref = RepetitionPenaltyLogitsProcessor(1.3)(ids, torch.from_numpy(logits.copy())[None])
        ref = TemperatureLogitsWarper(0.7)(ids, ref)
        ref = TopKLogitsWarper(40)(ids, ref)
        ref = TopPLogitsWarper(0.9)(ids, ref)
        ours = gen.repetition_penalty(logits.copy(), np.unique(seen), 1.3) / np.float32(0.7)
        ours = gen.top_p_filter(gen.top_k_filter(ours, 40), 0.9)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref[0].numpy()))
        np.testing.assert_allclose(ours[np.isfinite(ours)], ref[0].numpy()[np.isfinite(ours)], rtol=1e-6)


# -- sampling ------------------------------------------------------------------------------------------
def test_sampling_with_a_seed_is_reproducible(optimized: Callable[[str, str], Path],
                                              torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    model, tokenizer = torch_model("gpt2")
    runtime = LoadedModel(optimized("gpt2", "fp32"))
    params = {"do_sample": True, "temperature": 1.5, "top_k": 0, "max_new_tokens": NEW_TOKENS, "seed": 7}
    first = runtime.predict(PROMPTS, params)
    again = runtime.predict(PROMPTS, params)
    assert [a["details"]["token_ids"] for a in first] == [a["details"]["token_ids"] for a in again]
    other = runtime.predict(PROMPTS, {**params, "seed": 8})
    assert [a["details"]["token_ids"] for a in first] != [a["details"]["token_ids"] for a in other]
    greedy = [_generate(model, tokenizer, p, do_sample=False) for p in PROMPTS[:2]]
    assert [a["details"]["token_ids"] for a in first[:2]] != greedy  # it really sampled
    # top_k=1 sampling and temperature 0 (or one so small it overflows) are greedy, whatever the seed
    for extra in ({"top_k": 1}, {"temperature": 0.0}, {"temperature": 1e-30}):
        picked = runtime.predict(PROMPTS[:2], {**params, **extra, "seed": None})
        assert [a["details"]["token_ids"] for a in picked] == greedy


def test_concurrent_requests_do_not_mix_their_caches(optimized: Callable[[str, str], Path]) -> None:
    """One loaded model answering from several threads at once (the container server's pool): each
    request keeps its own KV cache, so every answer equals the one it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    runtime = LoadedModel(optimized("llama", "fp32"), threads=1)
    alone = [runtime.predict(p, {"max_new_tokens": NEW_TOKENS})[0]["details"]["token_ids"] for p in PROMPTS]
    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: runtime.predict(p, {"max_new_tokens": NEW_TOKENS}), PROMPTS * 3))
    assert [a[0]["details"]["token_ids"] for a in together] == alone * 3


# -- streaming (the runtime side a server-sent-events front iterates) -----------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_stream_events_add_up_to_the_answer(arch: str, optimized: Callable[[str, str], Path],
                                            torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    """One event per generated token (transformers' greedy ids, in order); each prompt's texts add up to
    its generated_text (byte-level pieces of one character and clean-up rewrites are held back until
    settled), and the last event carries the answer `predict` gives."""
    from slimserve.runtime import task_generation

    model, tokenizer = torch_model(arch)
    runtime = LoadedModel(optimized(arch, "fp32"))
    inputs = [*PROMPTS[:3], "Ünïcödé 東京 😀 isn't it ?"]
    events = list(task_generation.stream(runtime, inputs, {"max_new_tokens": NEW_TOKENS}, runtime.limits()))
    answers = runtime.predict(inputs, {"max_new_tokens": NEW_TOKENS})
    for index, (prompt, answer) in enumerate(zip(inputs, answers)):
        mine = [e for e in events if e["index"] == index]
        assert [e["token"]["id"] for e in mine] == _generate(model, tokenizer, prompt, do_sample=False)
        assert "".join(e["token"]["text"] for e in mine) == answer["generated_text"]
        assert all(e["generated_text"] is None for e in mine[:-1])
        assert mine[-1]["generated_text"] == answer["generated_text"]
        assert mine[-1]["details"]["token_ids"] == answer["details"]["token_ids"]
    with pytest.raises(InputError, match="top_p"):  # validated before the first event, so a 400 can be sent
        task_generation.stream(runtime, "Hi", {"top_p": 3})


# -- stop strings and EOS ------------------------------------------------------------------------------
def test_stop_strings_end_generation_like_transformers_stop_strings(
        optimized: Callable[[str, str], Path], torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    model, tokenizer = torch_model("gpt2")
    runtime = LoadedModel(optimized("gpt2", "fp32"))
    prompt = PROMPTS[1]
    whole = runtime.predict(prompt, {"max_new_tokens": NEW_TOKENS})[0]
    text = whole["generated_text"]
    stop = text[6:9]
    assert stop.strip()
    answer = runtime.predict(prompt, {"max_new_tokens": NEW_TOKENS, "stop": [stop, "never-seen"]})[0]
    assert answer["details"]["finish_reason"] == "stop_sequence"
    assert stop in prompt + answer["generated_text"] and text.startswith(answer["generated_text"])
    assert answer["details"]["token_ids"] == _generate(model, tokenizer, prompt, do_sample=False,
                                                       stop_strings=[stop, "never-seen"], tokenizer=tokenizer)
    assert whole["details"]["finish_reason"] == "length"


def test_eos_ends_generation_like_generate(folder: Callable[[str], Path], tmp_path: Path,
                                           torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    """A model whose generation_config names as EOS a token it greedily produces a few steps in (a token it
    had not produced before): transformers' generate and the runtime both stop there."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = torch_model("gpt2")
    found = []
    for prompt in PROMPTS:
        greedy = _generate(model, tokenizer, prompt, do_sample=False)
        found += [(prompt, greedy[i]) for i in range(2, len(greedy)) if greedy[i] not in greedy[:i]][:1]
    prompt, eos = found[0]
    source = _build(tmp_path / "eos-model", "gpt2", eos_token_id=eos)
    out = tmp_path / "out"
    result = run_cli("optimize", str(source), "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    answer = LoadedModel(out).predict(prompt, {"max_new_tokens": NEW_TOKENS})[0]
    expected = _generate(AutoModelForCausalLM.from_pretrained(source), tokenizer, prompt, do_sample=False)
    assert expected[-1] == eos and len(expected) < NEW_TOKENS
    assert answer["details"]["token_ids"] == expected and answer["details"]["finish_reason"] == "eos_token"
    # min_new_tokens keeps EOS out until then, as transformers' MinNewTokensLengthLogitsProcessor does
    pytorch = AutoModelForCausalLM.from_pretrained(source)
    for minimum in (len(expected), NEW_TOKENS):
        held = LoadedModel(out).predict(prompt, {"max_new_tokens": NEW_TOKENS, "min_new_tokens": minimum})[0]
        assert held["details"]["token_ids"] == _generate(pytorch, tokenizer, prompt, do_sample=False,
                                                         min_new_tokens=minimum)
        assert len(held["details"]["token_ids"]) > len(expected)
    with pytest.raises(InputError, match="chat input is not supported for this model .*no chat template"):
        LoadedModel(out).predict([{"role": "user", "content": "Hi"}])


# -- chat ------------------------------------------------------------------------------------------------
def _generate_chat(model: Any, tok: Any, chat: list[dict[str, str]]) -> list[int]:
    """generate on the chat as the pipeline tokenizes it (template, continuing a final assistant turn)."""
    import torch

    continued = chat[-1]["role"] == "assistant"
    encoded = tok.apply_chat_template(chat, add_generation_prompt=not continued, continue_final_message=continued,
                                      return_dict=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.eos_token_id)
    return [int(t) for t in out[0, encoded["input_ids"].shape[1]:]]


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_input_is_answered_like_the_pipeline(arch: str, optimized: Callable[[str, str], Path],
                                                  torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    """The model's chat template (ChatML with a default system prompt; Llama 3's with BOS and trimming),
    pre-rendered at optimize time, gives the pipeline's tokens, new text and full-text messages."""
    from transformers import pipeline

    model, tokenizer = torch_model(arch)
    runtime = LoadedModel(optimized(arch, "fp32"))
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    answers = runtime.predict(CHATS, {"max_new_tokens": NEW_TOKENS})  # a list of chats
    for chat, answer in zip(CHATS, answers):
        assert answer["details"]["token_ids"] == _generate_chat(model, tokenizer, chat), chat
        new = pipe(chat, max_new_tokens=NEW_TOKENS, do_sample=False, return_full_text=False)[0]["generated_text"]
        assert answer["generated_text"] == new
        full = runtime.predict(chat, {"max_new_tokens": NEW_TOKENS, "return_full_text": True, "details": False})
        assert full == pipe(chat, max_new_tokens=NEW_TOKENS, do_sample=False)


@pytest.mark.parametrize("template", [CHATML, LLAMA3, ZEPHYR, MISTRAL])
def test_pre_rendered_templates_render_like_transformers(template: str, folder: Callable[[str], Path]) -> None:
    """Every conversation of up to four turns over the three roles: the pre-rendered strings give
    transformers' rendering exactly, or both refuse it (Mistral: no system role, strict alternation)."""
    import itertools

    from transformers import AutoTokenizer

    from slimserve.optimizer.chat_format import extract
    from slimserve.runtime.task_generation import render_chat

    tokenizer = AutoTokenizer.from_pretrained(folder("llama"))
    tokenizer.chat_template = template
    chat_format, why = extract(tokenizer)
    assert chat_format is not None, why
    contents = ["  padded  ", "two\nlines", "", "{{ braces }} é 東京"]
    accepted = 0
    for length in range(1, 5):
        for roles in itertools.product(("system", "user", "assistant"), repeat=length):
            chat = [{"role": r, "content": contents[i]} for i, r in enumerate(roles)]
            continued = roles[-1] == "assistant"
            try:
                want = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=not continued,
                                                     continue_final_message=continued)
            except Exception:  # noqa: BLE001  # the template refuses this conversation
                want = None
            got = render_chat(chat_format, chat)
            if want is None:
                # transformers cannot continue an empty final message (it finds nothing to cut at)
                assert got is None or (roles[-1] == "assistant" and not chat[-1]["content"]), roles
            else:
                assert got == want, roles
                accepted += 1
    assert accepted >= 4  # Mistral: u, ua, uau, uaua


def test_a_template_that_changes_the_content_is_not_pre_rendered(folder: Callable[[str], Path]) -> None:
    from transformers import AutoTokenizer

    from slimserve.optimizer.chat_format import extract

    tokenizer = AutoTokenizer.from_pretrained(folder("llama"))
    tokenizer.chat_template = UPPER
    chat_format, why = extract(tokenizer)
    assert chat_format is None and "could not be pre-rendered" in why


# -- bad requests --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("parameters", "message"), [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": "8"}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"), ({"temperature": -1}, "temperature"),
    ({"temperature": "hot"}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
    ({"stop": [""]}, "stop"), ({"stop": 5}, "stop"), ({"stop": ["x"] * 17}, "stop"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"do_sample": "yes"}, "do_sample"),
    ({"return_full_text": None}, "return_full_text"), ({"num_beams": 4}, "unknown parameter"),
])
def test_bad_parameters_are_400s(parameters: dict[str, Any], message: str, optimized: Callable[[str, str], Path]) -> None:
    runtime = LoadedModel(optimized("llama", "fp32"))
    with pytest.raises(InputError, match=message) as caught:
        runtime.predict("Hello", parameters, runtime.limits())
    assert caught.value.status == 400


@pytest.mark.parametrize(("inputs", "message"), [
    ({"role": "user", "content": "Hi"}, "list of messages"), ([{"role": "tool", "content": "x"}], "role must be"),
    ([{"role": "user"}], "message"), ([{"role": "user", "content": 3}], "content"), ([[]], "empty chat"),
    ([{"role": "user", "content": "x", "name": "y"}], "message"),
    (5, "prompt string"), ([], "empty"), (["ok", 3], "prompt string"), ("", "at least one token"),
])
def test_bad_inputs_are_400s(inputs: Any, message: str, optimized: Callable[[str, str], Path]) -> None:
    runtime = LoadedModel(optimized("gpt2", "fp32"))
    with pytest.raises(InputError, match=message) as caught:
        runtime.predict(inputs, None, runtime.limits())
    assert caught.value.status == 400


def test_work_beyond_the_limits_is_413(optimized: Callable[[str, str], Path]) -> None:
    out = optimized("llama", "fp32")
    runtime = LoadedModel(out)
    spec = json.loads((out / "slimserve.json").read_text())["runtime"]
    assert spec["context_window"] == 256 and spec["max_new_tokens_limit"] == 255
    limits = runtime.limits()
    cases = [("Hi", {"max_new_tokens": 256}, "max_new_tokens"),
             ("Hi " * 150, {"max_new_tokens": 100}, "context window"),
             (["Hi"] * (limits.max_batch + 1), None, "too many inputs"),
             ("x" * (limits.max_chars + 1), None, "too long")]
    for inputs, parameters, message in cases:
        with pytest.raises(LimitError, match=message):
            runtime.predict(inputs, parameters, limits)


def test_a_time_budget_answers_what_was_generated(optimized: Callable[[str, str], Path],
                                                 torch_model: Callable[[str], tuple[Any, Any]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = torch_model("llama")
    runtime = LoadedModel(optimized("llama", "fp32"))
    monkeypatch.setenv("SLIMSERVE_MAX_GENERATION_SECONDS", "0.000001")
    answer = runtime.predict(PROMPTS[0], {"max_new_tokens": NEW_TOKENS})[0]
    assert answer["details"]["finish_reason"] == "time_limit" and answer["details"]["generated_tokens"] == 1
    assert answer["details"]["token_ids"] == _generate(model, tokenizer, PROMPTS[0], do_sample=False)[:1]
    monkeypatch.setenv("SLIMSERVE_MAX_GENERATION_SECONDS", "soon")  # refused when the model loads
    with pytest.raises(ValueError, match="SLIMSERVE_MAX_GENERATION_SECONDS"):
        LoadedModel(optimized("llama", "fp32"))


def test_encoder_decoder_folder_is_refused_up_front(tmp_path: Path) -> None:
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"],
                                                    "model_type": "t5", "is_encoder_decoder": True}))
    (folder / "model.safetensors").write_bytes(b"")
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"))
    assert_clean_error(result, contains="not supported yet")


# -- quantized -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["int4-weight", "int8-weight", "int4-weight(int8_form=resident)"])
def test_weight_quantized_fidelity_is_reported_and_measured(recipe: str, optimized: Callable[[str, str], Path],
                                                            torch_model: Callable[[str], tuple[Any, Any]]) -> None:
    out = optimized("llama", recipe)
    manifest = json.loads((out / "slimserve.json").read_text())
    fidelity = manifest["fidelity"]
    assert fidelity["metric"] == "next_token_agreement" and fidelity["samples"] == 16
    assert 0.0 <= fidelity["min"] <= fidelity["mean"] <= 1.0
    assert {"logit_cosine_mean", "greedy_prefix_mean", "greedy_identical"} <= set(fidelity["details"])
    model, tokenizer = torch_model("llama")
    runtime = LoadedModel(out)
    prefixes = []
    for answer, prompt in zip(runtime.predict(PROMPTS, {"max_new_tokens": NEW_TOKENS}), PROMPTS):
        expected = _generate(model, tokenizer, prompt, do_sample=False)
        got = answer["details"]["token_ids"]
        prefixes.append(next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got))))
    print(f"llama {recipe}: {manifest['model']['bytes']} bytes (fp32 {manifest['model']['fp32_bytes']}); "
          f"next-token agreement {fidelity['mean']} (min {fidelity['min']}); details {fidelity['details']}; "
          f"greedy identical prefixes vs generate on this test's prompts: {prefixes} of {NEW_TOKENS}")
    assert fidelity["details"]["logit_cosine_mean"] > 0.9
    assert fidelity["mean"] > 0.5


def test_int4_keeps_its_int8_matmuls_resident_when_asked_and_folded_by_default_on_a_small_model(
        tmp_path: Path) -> None:
    """int8_form=resident: the MatMuls 4 bits would hurt most become MatMulNBits bits=8 (int8 in memory);
    auto on this small model (< 1 GiB of weights) keeps the folded form (float32 at load, float32 speed).
    A Llama wide enough (hidden 64) that eleven MatMuls are 4-bit candidates, so three are kept int8."""
    import onnx
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _tokenizer(bos=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "model")
    for recipe, form in (("int4-weight(int8_form=resident)", "resident"), ("int4-weight", "fold")):
        out = tmp_path / form
        result = run_cli("optimize", str(tmp_path / "model"), "-o", str(out), "--recipe", recipe)
        assert result.returncode == 0, result.stderr
        details = json.loads((out / "slimserve.json").read_text())["steps"][-1]["details"]
        assert details["int8_form"] == form and len(details["kept_int8"]) == 3, details
        graph = onnx.load(str(out / "model.onnx")).graph
        bits = [next(a.i for a in n.attribute if a.name == "bits") for n in graph.node if n.op_type == "MatMulNBits"]
        kept_as_matmul = [n.name for n in graph.node if n.op_type == "MatMul" and n.name in details["kept_int8"]]
        if form == "resident":
            assert bits.count(8) >= 3 and not kept_as_matmul, (bits, kept_as_matmul)
        else:
            assert 8 not in bits and len(kept_as_matmul) == 3, (bits, kept_as_matmul)
        answers = LoadedModel(out).predict(PROMPTS, {"max_new_tokens": NEW_TOKENS})
        greedy = [_generate(model, tokenizer, p, do_sample=False) for p in PROMPTS]
        first = [a["details"]["token_ids"][0] == g[0] for a, g in zip(answers, greedy)]
        assert sum(first) >= 3, (form, first)  # a quantized model still mostly agrees on the first token


# -- Lambda, end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_lambda_package_generates_like_transformers(arch: str, optimized: Callable[[str, str], Path],
                                                    torch_model: Callable[[str], tuple[Any, Any]],
                                                    tmp_path: Path) -> None:
    """fp32, packaged for Lambda (with check), invoked like Lambda in a fresh python3.12 with only the
    layer and the function: greedy ids identical to generate for 32 new tokens on every prompt."""
    require(find_python("3.12"), "python3.12")
    model, tokenizer = torch_model(arch)
    out = optimized(arch, "fp32")
    pkg = tmp_path / "pkg"
    result = run_cli("package", str(out), "--target", "lambda", "-o", str(pkg))
    assert result.returncode == 0, result.stderr
    assert "checks" in json.loads((pkg / "slimserve.json").read_text())["package"]
    # generating time is bounded under the function timeout: a slow request answers what it has
    timeout = json.loads((pkg / "slimserve.json").read_text())["package"]["timeout_s"]
    budget = f'SLIMSERVE_MAX_GENERATION_SECONDS: "{timeout - max(2, -(-timeout * 15 // 100))}"'
    assert budget in (pkg / "template.yaml").read_text()
    assert "SLIMSERVE_MAX_GENERATION_SECONDS=" in (pkg / "DEPLOY.md").read_text()
    http = {"requestContext": {"http": {"method": "POST"}}, "rawPath": "/predict",
            "headers": {"content-type": "application/json"}}
    events: list[Any] = [{"inputs": PROMPTS, "parameters": {"max_new_tokens": NEW_TOKENS}},
                         {"inputs": PROMPTS[0], "parameters": {"do_sample": True, "seed": 5, "top_k": 0}},
                         {"inputs": PROMPTS[0], "parameters": {"do_sample": True, "seed": 5, "top_k": 0}},
                         {**http, "body": json.dumps({"inputs": PROMPTS[0], "parameters": {"top_p": 2}})},
                         {**http, "body": json.dumps({"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 1000}})},
                         {**http, "body": json.dumps({"inputs": CHATS[2]})},
                         {**http, "body": json.dumps({"inputs": [{"role": "robot", "content": "Hi"}]})},
                         {**http, "body": json.dumps({"inputs": PROMPTS[0], "stream": True})},
                         {**http, "rawPath": "/v1/chat/completions",
                          "body": json.dumps({"messages": CHATS[2], "max_tokens": NEW_TOKENS, "temperature": 0})}]
    ran = run_like_lambda(pkg, tmp_path / "run", "3.12", events)
    assert ran["modules"] == []  # neither torch nor slimserve at run time
    greedy, sampled, sampled_again, bad, too_many, chat, bad_chat, streamed, completion = ran["responses"]
    for prompt, answer in zip(PROMPTS, greedy):
        assert answer["details"]["token_ids"] == _generate(model, tokenizer, prompt, do_sample=False), prompt
    assert sampled[0]["details"]["token_ids"] == sampled_again[0]["details"]["token_ids"]
    assert bad["statusCode"] == 400 and "top_p" in json.loads(bad["body"])["error"]
    assert too_many["statusCode"] == 413 and "max_new_tokens" in json.loads(too_many["body"])["error"]
    assert chat["statusCode"] == 200
    assert json.loads(chat["body"])[0]["details"]["token_ids"] == _generate_chat(model, tokenizer, CHATS[2])
    assert bad_chat["statusCode"] == 400 and "role must be" in json.loads(bad_chat["body"])["error"]
    # Lambda's managed runtimes answer whole responses: a stream is refused with the way out
    assert streamed["statusCode"] == 400 and "container target" in json.loads(streamed["body"])["error"]
    # OpenAI's chat completions, non-streamed, on Lambda too (the same routing table as the container)
    body = json.loads(completion["body"])
    assert completion["statusCode"] == 200 and body["object"] == "chat.completion"
    expected = tokenizer.decode(_generate_chat(model, tokenizer, CHATS[2]), skip_special_tokens=True)
    assert body["choices"][0]["message"]["content"] == expected
