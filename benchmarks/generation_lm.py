"""A ~0.5 B-parameter language model on CPU: slimserve's fp32 / int8-weight / int8 / int4-weight vs PyTorch.

    .venv/bin/python benchmarks/generation_lm.py [--rounds 3] [--out benchmarks/results/generation_lm.md]

Builds Qwen2.5-0.5B from its published config.json (values written literally below) with random float32
weights (torch seeded), plus a byte-level BPE tokenizer trained here (no hub) and padded to Qwen's 151643
regular ids + its special tokens at Qwen's ids, so every id the random model emits decodes to bytes as a
real Qwen tokenizer would. Saved under benchmarks/work/ (git-ignored), then `slimserve optimize` (the real
CLI) for each recipe. Measured, each in a FRESH python process (interleaved fp32, int8-weight,
`int8` (which takes int8-resident at accuracy level 4 for a model this size), int4-weight, PyTorch per
round; medians over the rounds):
- bytes: the folder a deployment ships (slimserve: the optimize output; PyTorch: the saved HF folder);
- import: importing the runtime (slimserve.runtime.model_runtime + onnxruntime + tokenizers, no torch;
  PyTorch: torch + transformers);
- load: slimserve's `LoadedModel(OUT)` (the shipped runtime: session + tokenizer, as the Lambda handler
  loads it); PyTorch: `AutoModelForCausalLM.from_pretrained` + `AutoTokenizer.from_pretrained`;
- the first request (cold) and a second one (warm), a ~64-token prompt, 32 greedy new tokens:
  time to first token and tokens/s after it (slimserve: the runtime's own `details` timings from
  `LoadedModel.predict`; PyTorch: `generate(do_sample=False, min_new_tokens=32)` timed by a streamer's
  per-token callbacks, the same definition: (n-1) / (time after the first token));
- peak RSS: the child's `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end.
onnxruntime takes the CPUs this process may use (2 here); torch.set_num_threads gets the same number.
Re-runs reuse the model folder and the optimize outputs under benchmarks/work/generation_lm/ (delete it
to rebuild; the report then says the optimize times were reused). Peak memory: ~7.5 GB while optimizing,
~7.3 GB for an int8-weight child. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "generation_lm"
PY = sys.executable
RECIPES = ("fp32", "int8-weight", "int8", "int4-weight")
NEW_TOKENS = 32
PROMPT_TOKENS = 64

# Qwen/Qwen2.5-0.5B config.json, as published (torch_dtype bfloat16 there; random float32 weights here).
QWEN25_05B: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True, "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}
REGULAR_IDS = 151643  # Qwen2's byte-level BPE vocabulary; its special tokens follow
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAIN_TEXT = [
    "Serverless inference scales to zero when idle and bills per millisecond of compute.",
    "Small language models run on CPUs with 4-bit weights and a key-value cache.",
    "The quick brown fox jumps over the lazy dog while the keeper counts the sheep.",
    "Cold starts matter: a function that loads two gigabytes of weights waits for the disk.",
    "Q: What is the capital of France?\nA: Paris is the capital of France.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
] * 50
PROMPT_SOURCE = (
    "You are a helpful assistant running inside a serverless function. A customer writes: my order of three "
    "blue shirts arrived yesterday, but one of them has a torn sleeve and the package was wet. I would like a "
    "replacement or a refund, whichever is faster, and I want to know how long it will take. Summarise the "
    "request in one sentence, classify its urgency as low, medium or high, and draft a short, polite reply "
    "that confirms the next steps and the expected delay."
)


def transformers() -> Any:
    """transformers, untyped (imported lazily: the slimserve children must never load it)."""
    return importlib.import_module("transformers")


# -- the model folder ---------------------------------------------------------------------------------
def tokenizer() -> Any:
    """A byte-level BPE like Qwen2's: merges trained on a little text, then the vocabulary padded with
    3-byte tokens to Qwen's 151643 regular ids, its special tokens at 151643.. as in Qwen's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    hf = transformers()

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=1200, show_progress=False, initial_alphabet=alphabet)
    bpe.train_from_iterator(TRAIN_TEXT, trainer)
    data = json.loads(bpe.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    chars = sorted(alphabet)
    index = 0
    while len(vocab) < REGULAR_IDS:  # filler tokens: distinct 3-byte strings (decode to bytes like any other)
        token = chars[index // 65536 % 256] + chars[index // 256 % 256] + chars[index % 256]
        index += 1
        if token not in vocab:
            vocab[token] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens(SPECIALS)
    assert [tok.token_to_id(s) for s in SPECIALS] == [REGULAR_IDS, REGULAR_IDS + 1, REGULAR_IDS + 2]
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = hf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   model_input_names=["input_ids", "attention_mask"])
    fast.model_max_length = QWEN25_05B["max_position_embeddings"]
    return fast


def build(folder: Path) -> Path:
    import torch

    hf = transformers()
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    torch.manual_seed(0)
    config = hf.Qwen2Config(**QWEN25_05B)
    model = hf.Qwen2ForCausalLM(config).eval()
    print(f"built Qwen2.5-0.5B shape: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer().save_pretrained(folder)
    return folder


def prompt(folder: Path) -> str:
    """About PROMPT_TOKENS tokens of PROMPT_SOURCE (the decoded first ids; re-encoding may differ by one)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tok.encode(PROMPT_SOURCE).ids
    assert len(ids) >= PROMPT_TOKENS, len(ids)
    return str(tok.decode(ids[:PROMPT_TOKENS]))


def optimize(folder: Path, recipe: str) -> tuple[Path, float | None]:
    """`slimserve optimize` through the CLI (skipped when its output exists: the seconds are then None)."""
    out = WORK / recipe
    if (out / "slimserve.json").exists():
        return out, None
    command = [PY, "-m", "slimserve", "optimize", str(folder), "-o", str(out), "--recipe", recipe]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    print(result.stdout[-3000:], result.stderr[-3000:], sep="\n", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"optimize --recipe {recipe} failed ({result.returncode}) after {seconds:.0f}s")
    return out, seconds


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- the fresh processes ------------------------------------------------------------------------------
def child_slimserve(out: str, text: str) -> dict[str, Any]:
    start = time.perf_counter()
    from slimserve.runtime.model_runtime import LoadedModel, available_cpus

    imported = time.perf_counter()
    model = LoadedModel(out)
    loaded = time.perf_counter()
    runs = []
    for _ in range(2):  # cold, then warm
        began = time.perf_counter()
        answer = model.predict(text, {"max_new_tokens": NEW_TOKENS, "temperature": 0.0})[0]["details"]
        runs.append({"ttft_s": answer["time_to_first_token_s"], "tokens_per_s": answer["tokens_per_s"],
                     "tokens": answer["generated_tokens"], "prompt_tokens": answer["prompt_tokens"],
                     "finish": answer["finish_reason"], "request_s": time.perf_counter() - began})
    assert "torch" not in sys.modules, "the shipped runtime imported torch"
    return {"import_s": imported - start, "load_s": loaded - imported, "cold": runs[0], "warm": runs[1],
            "threads": available_cpus()}


def child_torch(folder: str, text: str, threads: int) -> dict[str, Any]:
    start = time.perf_counter()
    import torch

    hf = transformers()
    base: Any = importlib.import_module("transformers.generation.streamers").BaseStreamer

    torch.set_num_threads(threads)
    imported = time.perf_counter()
    model = hf.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = hf.AutoTokenizer.from_pretrained(folder)
    loaded = time.perf_counter()

    class Clock(base):  # type: ignore[misc]
        """generate() calls put() with the prompt, then once per new token: their times."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    runs = []
    for _ in range(2):
        began = time.perf_counter()
        encoded = tok(text, return_tensors="pt")
        clock = Clock()
        with torch.inference_mode():
            output = model.generate(**encoded, do_sample=False, max_new_tokens=NEW_TOKENS,
                                    min_new_tokens=NEW_TOKENS, pad_token_id=tok.eos_token_id, streamer=clock)
        done = time.perf_counter()
        new = int(output.shape[1] - encoded["input_ids"].shape[1])
        token_times = clock.times[1:]  # times[0]: the prompt
        rest = token_times[-1] - token_times[0]
        runs.append({"ttft_s": token_times[0] - began, "tokens_per_s": (new - 1) / rest if rest > 0 else None,
                     "tokens": new, "prompt_tokens": int(encoded["input_ids"].shape[1]), "finish": "length",
                     "request_s": done - began})
    return {"import_s": imported - start, "load_s": loaded - imported, "cold": runs[0], "warm": runs[1],
            "threads": torch.get_num_threads()}


def measure(kind: str, target: Path, text: str, threads: int) -> dict[str, Any]:
    """One fresh python process: its measurements and its peak RSS."""
    command = [PY, __file__, "--child", kind, str(target), "--text", text, "--threads", str(threads)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"child {kind} {target} failed:\n{result.stderr[-3000:]}")
    values: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


def child_main(kind: str, target: str, text: str, threads: int) -> None:
    values = child_slimserve(target, text) if kind == "slimserve" else child_torch(target, text, threads)
    values["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(values))


# -- the report ---------------------------------------------------------------------------------------
def median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return float(statistics.median(values))


def cpu() -> str:
    text = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown")
    vnni = "avx512_vnni" in text
    return f"{name}, avx512_vnni {'present' if vnni else 'absent'}, {os.cpu_count()} CPUs visible"


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    base = rows["PyTorch + transformers"]
    metrics = [("bytes (MB)", ("bytes",), 1e-6, "{:,.0f}", False),
               ("peak RSS (MB)", ("peak_rss_bytes",), 1e-6, "{:,.0f}", False),
               ("import (s)", ("import_s",), 1, "{:.2f}", False),
               ("load (s)", ("load_s",), 1, "{:.2f}", False),
               ("TTFT cold (s)", ("cold", "ttft_s"), 1, "{:.3f}", False),
               ("TTFT warm (s)", ("warm", "ttft_s"), 1, "{:.3f}", False),
               ("tokens/s cold", ("cold", "tokens_per_s"), 1, "{:.1f}", True),
               ("tokens/s warm", ("warm", "tokens_per_s"), 1, "{:.1f}", True)]
    lines = ["| | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for label, path, scale, fmt, higher in metrics:
        cells = []
        for name, row in rows.items():
            value = median(row["runs"], *path) if path[0] != "bytes" else float(row["bytes"])
            ref = median(base["runs"], *path) if path[0] != "bytes" else float(base["bytes"])
            cell = fmt.format(value * scale)
            if name != "PyTorch + transformers" and ref:
                cell += f" ({value / ref:.2f}x)"
            cells.append(cell)
        note = " (higher is better)" if higher else ""
        lines.append(f"| {label}{note} | " + " | ".join(cells) + " |")
    tokens = {name: sorted({int(r[k]["tokens"]) for r in row["runs"] for k in ("cold", "warm")})
              for name, row in rows.items()}
    prompts = {name: sorted({int(r["cold"]["prompt_tokens"]) for r in row["runs"]}) for name, row in rows.items()}
    lines.append("| new tokens generated | " + " | ".join(",".join(map(str, t)) for t in tokens.values()) + " |")
    lines.append("| prompt tokens | " + " | ".join(",".join(map(str, t)) for t in prompts.values()) + " |")
    return lines


def fidelity_lines(outs: dict[str, Path]) -> list[str]:
    lines = ["| recipe | metric | mean | min | details |", "|---|---|---:|---:|---|"]
    for recipe, out in outs.items():
        manifest = json.loads((out / "slimserve.json").read_text())
        fid = manifest.get("fidelity") or {}
        details = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in (fid.get("details") or {}).items() if not isinstance(v, (dict, list)))
        lines.append(f"| {recipe} | {fid.get('metric')} | {fid.get('mean')} | {fid.get('min')} | {details} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generation_lm.md")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    parser.add_argument("--text", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], args.child[1], args.text, args.threads)
        return
    began = time.perf_counter()
    command = " ".join([".venv/bin/python", "benchmarks/generation_lm.py", *sys.argv[1:]])
    folder = build(WORK / "hf")
    text = prompt(folder)
    outs: dict[str, Path] = {}
    optimize_s: dict[str, float | None] = {}
    for recipe in RECIPES:
        outs[recipe], optimize_s[recipe] = optimize(folder, recipe)
    from slimserve.runtime.model_runtime import available_cpus

    threads = available_cpus()
    rows: dict[str, dict[str, Any]] = {r: {"bytes": folder_bytes(o), "runs": []} for r, o in outs.items()}
    rows["PyTorch + transformers"] = {"bytes": folder_bytes(folder), "runs": []}
    for round_ in range(args.rounds):
        for name, row in rows.items():
            if name in outs:
                values = measure("slimserve", outs[name], text, threads)
            else:
                values = measure("torch", folder, text, threads)
            row["runs"].append(values)
            print(f"round {round_ + 1} {name}: {json.dumps(values)}", flush=True)
    minutes = (time.perf_counter() - began) / 60
    timed = ", ".join(f"{r} {s:.0f}s" if s is not None else f"{r} (reused from an earlier run)"
                      for r, s in optimize_s.items())
    report = [
        "# A ~0.5 B-parameter LM (Qwen2.5-0.5B config, random weights): slimserve recipes vs PyTorch",
        "",
        "```", command, "```", "",
        (f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; CPU: {cpu()}; "
        f"threads: onnxruntime {threads}, torch {threads}"),
        (f"- onnxruntime {_version('onnxruntime')}, torch {_version('torch')}, transformers "
        f"{_version('transformers')}, python {platform.python_version()}"),
        (f"- model: Qwen2ForCausalLM from Qwen2.5-0.5B's published config.json, random float32 weights "
        f"(torch.manual_seed(0)), byte-level BPE padded to Qwen's {REGULAR_IDS} regular ids; "
        f"`slimserve optimize` wall time: {timed}"),
        (f"- {args.rounds} rounds, each measurement a fresh python process, interleaved "
        f"({', '.join(rows)}); medians. Whole run {minutes:.1f} min."),
        ("- bytes: the folder that ships (slimserve optimize output; PyTorch: the saved HF folder, float32 "
        "safetensors). load: `LoadedModel(OUT)` (session + tokenizer, the shipped runtime) vs "
        "`from_pretrained` (model + tokenizer). TTFT: prompt processing to the first greedy token; tokens/s "
        "after the first token; cold = first request of the process, warm = the second. Ratios in "
        "parentheses are vs PyTorch."),
        "",
        *table(rows),
        "",
        "## Fidelity (from each OUT/slimserve.json: slimserve's built-in prompts vs the PyTorch model)",
        "",
        *fidelity_lines(outs),
        "",
        ("Random weights make a near-flat next-token distribution, so quantization flips the argmax far more "
        "often than on a trained model: read the agreement numbers as a lower bound, the logit cosine as "
        "the closer proxy."),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print("\n".join(report))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
