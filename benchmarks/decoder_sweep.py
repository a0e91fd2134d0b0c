"""Which decoder architectures generate like transformers: a sweep of tiny random models through the real CLI.

    .venv/bin/python benchmarks/decoder_sweep.py [ARCH ...] [--out benchmarks/results/decoder_sweep.md]

For each architecture: a tiny model built from its transformers config class (2 layers, hidden 32, random
weights, torch seeded) with the byte-level BPE tokenizer the generation tests train (no hub), saved as an
HF folder; `slimserve optimize FOLDER --recipe fp32` (the real CLI); then the shipped runtime's greedy
answer to the tests' 5 prompts, 32 new tokens each, compared id for id with `generate(do_sample=False)`
on the PyTorch model. A refusal is recorded with its error line (it must be one `error:` line, never a
traceback). The six structurally different ones (BLOOM, MPT, GPT-BigCode, Falcon, GPT-NeoX, OPT) are also
tests (tests/test_family_generation.py); this sweep covers more, once. Nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "max_position_embeddings": 256}
GQA = {**COMMON, "num_key_value_heads": 2}
ARCHS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", GQA),
    "mistral": ("MistralConfig", "MistralForCausalLM", GQA),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", GQA),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**GQA, "head_dim": 8}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**GQA, "head_dim": 8}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**GQA, "head_dim": 8}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {**GQA, "head_dim": 8}),
    "phi": ("PhiConfig", "PhiForCausalLM", COMMON),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", GQA),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", GQA),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", GQA),
    "granite": ("GraniteConfig", "GraniteForCausalLM", GQA),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", GQA),
    "cohere": ("CohereConfig", "CohereForCausalLM", GQA),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", COMMON),
    "gpt_neo": ("GPTNeoConfig", "GPTNeoForCausalLM", {"hidden_size": 32, "num_layers": 2, "num_heads": 4,
                                                      "attention_types": [[["global", "local"], 1]],
                                                      "max_position_embeddings": 256, "window_size": 16}),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256,
                                               "rotary_dim": 4}),
    "codegen": ("CodeGenConfig", "CodeGenForCausalLM", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256,
                                                        "n_ctx": 256, "rotary_dim": 4}),
    "opt": ("OPTConfig", "OPTForCausalLM", {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2,
                                            "num_attention_heads": 4, "max_position_embeddings": 256,
                                            "word_embed_proj_dim": 32}),
    "falcon": ("FalconConfig", "FalconForCausalLM", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                                     "new_decoder_architecture": False, "multi_query": True}),
    "bloom": ("BloomConfig", "BloomForCausalLM", {"hidden_size": 32, "n_layer": 2, "n_head": 4}),
    "mpt": ("MptConfig", "MptForCausalLM", {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 256}),
    "gpt_bigcode": ("GPTBigCodeConfig", "GPTBigCodeForCausalLM", {"n_embd": 32, "n_layer": 2, "n_head": 4,
                                                                  "n_positions": 256}),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {**GQA, "num_experts": 4, "num_experts_per_tok": 2,
                                                            "moe_intermediate_size": 32,
                                                            "shared_expert_intermediate_size": 32}),
}


def one(name: str, work: Path) -> str:
    """One markdown row: architecture, outcome, greedy identical prompts."""
    import torch
    import transformers

    from slimserve.runtime.model_runtime import LoadedModel
    from tests.test_family_generation import NEW_TOKENS, PROMPTS, _generate, _tokenizer

    config_name, model_name, kwargs = ARCHS[name]
    torch.manual_seed(0)
    tokenizer = _tokenizer(bos=True)
    config = getattr(transformers, config_name)(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id, **kwargs)
    model = getattr(transformers, model_name)(config).eval()
    folder, out = work / name / "model", work / name / "out"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    result = subprocess.run([sys.executable, "-m", "slimserve", "optimize", str(folder), "-o", str(out),
                             "--recipe", "fp32", "--format", "json"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
        clean = "Traceback" not in result.stderr and lines and lines[0].startswith("error:")
        said = " / ".join(ln.replace(str(work), "…").replace("|", "/") for ln in lines)
        return f"| {name} | refused (exit {result.returncode}{'' if clean else ', NOT a clean error'}): {said} | — |"
    manifest = json.loads((out / "slimserve.json").read_text())
    answers = LoadedModel(out).predict(PROMPTS, {"max_new_tokens": NEW_TOKENS})
    same = sum(a["details"]["token_ids"] == _generate(model, tokenizer, p, do_sample=False)
               for p, a in zip(PROMPTS, answers))
    fidelity = manifest["fidelity"]
    return (f"| {name} | exported; next-token agreement {fidelity['mean']}, context window "
            f"{manifest['runtime']['context_window']} | {same}/{len(PROMPTS)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", help=f"some of: {', '.join(ARCHS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    unknown = sorted(set(args.archs) - set(ARCHS))
    if unknown:
        parser.error(f"unknown architecture {', '.join(unknown)}; choose from {', '.join(ARCHS)}")
    import transformers

    rows = ["| architecture | outcome | greedy ids identical to generate |", "|---|---|---:|"]
    with tempfile.TemporaryDirectory(prefix="decoder-sweep-") as tmp:
        for name in args.archs or list(ARCHS):
            rows.append(one(name, Path(tmp)))
            print(rows[-1], flush=True)
    report = ["# Decoder architectures through `slimserve optimize --recipe fp32` and the shipped generate loop", "",
              (f"Command: `.venv/bin/python benchmarks/decoder_sweep.py` (transformers {transformers.__version__}; "
               f"tiny random models, {len(rows) - 2} architectures; 5 prompts x 32 greedy tokens each)"), "", *rows, ""]
    if args.out:
        args.out.write_text("\n".join(report), encoding="utf-8")
    print("\n".join(report))


if __name__ == "__main__":
    main()
