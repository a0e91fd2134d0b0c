"""int8-dynamic on CPUs with and without VNNI: which weight format stays faithful everywhere, and what it costs.

On x86-64 without VNNI (AVX2 only), onnxruntime's u8s8 integer kernels multiply with VPMADDUBSW, which adds
pairs of uint8 x int8 products into int16 with saturation (onnxruntime's quantization docs say so). The
same model is exact on a VNNI CPU (VPDPBUSD accumulates in int32) and saturates on an AVX2 one. We cannot
switch this machine's CPU, but QEMU user mode can: `qemu-x86_64 -cpu Haswell` runs the same Python, the
same onnxruntime wheel and the same model on an emulated AVX2 CPU, so MLAS takes its AVX2 kernels.

For each variant it writes the model (from slimserve's fp32 MiniLM), then measures mean/min cosine of the
sentence embeddings against the fp32 model on tests/data/heldout_eval.jsonl (162 texts, never used for
calibration) natively and (every 4th text: emulation is ~1000x slower) under the emulated Haswell, and warm latency natively (1 thread, batch 1 and 8,
rounds interleaved across variants, medians).

    .venv/bin/python benchmarks/int8_isa.py          # needs qemu-user (apt-get install qemu-user)

Writes benchmarks/results/int8_isa.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "int8_isa"
RESULTS = REPO / "benchmarks" / "results" / "int8_isa.md"
HELDOUT = REPO / "tests" / "data" / "heldout_eval.jsonl"
EMULATED_STEP = 4  # every 4th held-out text on the emulated CPU (41 of 162)
VARIANTS = {
    "u8s8": {"weight_type": "int8", "reduce_range": False},
    "u8s8-reduce-range": {"weight_type": "int8", "reduce_range": True},
    "u8u8": {"weight_type": "uint8", "reduce_range": False},
}

# Runs in a child process (natively or under qemu): embeddings of every model for the held-out texts.
_EMBED = r"""
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
folder, texts_file, step, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
models = sys.argv[5:]
texts = [json.loads(l)["text"] for l in open(texts_file, encoding="utf-8") if l.strip()][::step]
tok = Tokenizer.from_file(folder + "/tokenizer.json")
tok.enable_truncation(max_length=256)
result = {}
for path in models:
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    rows = []
    for text in texts:
        e = tok.encode(text)
        feed = {"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask], np.int64),
                "token_type_ids": np.array([e.type_ids], np.int64)}
        hidden = sess.run(None, {k: v for k, v in feed.items() if k in names})[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        v = (hidden * mask).sum(1) / mask.sum(1)
        rows.append((v / np.linalg.norm(v, axis=-1, keepdims=True))[0])
    result[path] = np.stack(rows).tolist()
json.dump(result, open(out, "w"))
"""


def fp32_folder() -> Path:
    out = WORK / "fp32"
    if not (out / "model.onnx").exists():
        subprocess.run([str(REPO / ".venv/bin/slimserve"), "optimize", "all-MiniLM-L6-v2", "-o", str(out),
                        "--recipe", "fp32"], check=True)
    return out


def build_variants(fp32: Path) -> dict[str, Path]:
    from slimserve.optimizer.steps import int8_dynamic
    from slimserve.optimizer.steps.base import StepContext

    paths = {}
    for name, options in VARIANTS.items():
        dst = WORK / f"{name}.onnx"
        work = WORK / f"tmp-{name}"
        work.mkdir(parents=True, exist_ok=True)
        int8_dynamic.quantize(fp32 / "model.onnx", dst, StepContext(work_dir=work, calibration=[]),
                              int8_dynamic.DynamicOptions(**options))  # type: ignore[arg-type]
        shutil.rmtree(work)
        paths[name] = dst
    return paths


def embeddings(fp32: Path, models: list[Path], emulate: str | None, step: int = 1) -> dict[str, list[list[float]]]:
    """Embeddings of every `step`-th held-out text per model, natively or on the emulated CPU `emulate`."""
    out = WORK / f"emb-{emulate or 'native'}.json"
    cmd = [sys.executable, "-c", _EMBED, str(fp32), str(HELDOUT), str(step), str(out), *map(str, models)]
    if emulate:
        cmd = ["qemu-x86_64", "-cpu", emulate, *cmd]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    data: dict[str, list[list[float]]] = json.loads(out.read_text())
    return data


def cosines(ref: list[list[float]], got: list[list[float]]) -> tuple[float, float]:
    import numpy as np

    a, b = np.asarray(ref), np.asarray(got)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def latency(models: dict[str, Path], fp32: Path, rounds: int = 15) -> dict[str, tuple[float, float]]:
    """Warm ms at batch 1 and 8, one thread; each round visits every model once (A B C A B C ...)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(fp32 / "tokenizer.json"))
    tok.enable_padding()
    text = "The serverless function timed out after 15 seconds while loading the model."
    sessions = {}
    for name, path in models.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for batch in (1, 8):
        enc = tok.encode_batch([text] * batch)
        feeds[batch] = {"input_ids": np.array([e.ids for e in enc], np.int64),
                        "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
                        "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in sessions for b in feeds}
    for _ in range(rounds):
        for name, sess in sessions.items():
            names = {i.name for i in sess.get_inputs()}
            for batch, feed in feeds.items():
                args = {k: v for k, v in feed.items() if k in names}
                sess.run(None, args)
                start = time.perf_counter()
                for _ in range(5):
                    sess.run(None, args)
                times[(name, batch)].append((time.perf_counter() - start) / 5 * 1000)
    return {n: (statistics.median(times[(n, 1)]), statistics.median(times[(n, 8)])) for n in sessions}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_folder()
    variants = build_variants(fp32)
    order = [fp32 / "model.onnx", *variants.values()]
    native = embeddings(fp32, order, None)
    # Emulation runs ~1000x slower: every EMULATED_STEP-th text, against the native fp32 embeddings of
    # the same texts (fp32 has no integer kernels, so the reference does not depend on the ISA).
    haswell = embeddings(fp32, list(variants.values()), "Haswell", EMULATED_STEP)
    speed = latency({"fp32": fp32 / "model.onnx", **variants}, fp32)
    flags = Path("/proc/cpuinfo").read_text()
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    lines = [
        "# int8-dynamic weight formats on CPUs with and without VNNI (all-MiniLM-L6-v2)", "",
        (f"Measured by `benchmarks/int8_isa.py` on {cpu_name()} ({'with' if vnni else 'without'} VNNI), "
        f"{os.cpu_count()} vCPUs; 'AVX2 (emulated)' is the same process under `qemu-x86_64 -cpu Haswell`, "
        "where onnxruntime's MLAS takes its AVX2 kernels. Cosine of sentence embeddings against the fp32 "
        "model on the 162 held-out texts (every 4th, 41 texts, when emulated); warm latency natively, 1 thread, medians of 15 interleaved rounds."),
        "",
        "| variant | mean / min cosine, this CPU | mean / min cosine, AVX2 (emulated) | warm b1 / b8 ms |",
        "|---|---|---|---:|",
    ]
    ref_native = native[str(order[0])]
    ref_haswell = ref_native[::EMULATED_STEP]
    b1, b8 = speed["fp32"]
    lines.append(f"| fp32 | 1.0000 / 1.0000 | 1.0000 / 1.0000 | {b1:.1f} / {b8:.1f} |")
    for name, path in variants.items():
        mn, mi = cosines(ref_native, native[str(path)])
        hn, hi = cosines(ref_haswell, haswell[str(path)])
        b1, b8 = speed[name]
        lines.append(f"| {name} | {mn:.4f} / {mi:.4f} | {hn:.4f} / {hi:.4f} | {b1:.1f} / {b8:.1f} |")
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
