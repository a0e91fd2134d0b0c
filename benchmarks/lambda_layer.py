"""Naive Lambda layer vs slimserve's, side by side in one run: bytes and fresh-process cold start.

naive:     `pip install --target` of the same pinned packages for the same target (all declared deps,
           no bytecode: `--no-compile`, and Lambda's /opt is read-only so none gets cached), zipped with
           the same reproducible zip writer.
slimserve: `build_closure` (trimmed, unchecked-hash bytecode), zipped the same way.
no-blas:   the same with `--numpy no-blas` (numpy built here without OpenBLAS for the target's glibc,
           packagers/numpy_noblas.py; the first run builds it, about 4 minutes). `--no-noblas` leaves it out.
Both run the same model through the same handler; slimserve's function ships the weights as external data
(memory-mapped at load), the naive one zips the optimize output as it is.
Cold start: import + load + first inference, each run a fresh
`python3.X -I -S -B` that sees only task/ + the layer; runs interleaved (naive, slim, no-blas, naive, ...).

    python benchmarks/lambda_layer.py [--model OPTIMIZE_OUTPUT] [--runs 9] [--python 3.12] [--no-noblas]
Without --model it builds MiniLM int8 with slimserve's optimizer first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from slimserve.bundle import load_bundle
from slimserve.measure.coldstart import measure_cold_start, sample_event
from slimserve.packagers.closure import build_closure, closure_info
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.lambda_target import function_entries
from slimserve.packagers.repro_zip import tree_entries, write_zip
from slimserve.packagers.reproducible import write_tree
from slimserve.packagers.target import Target
from slimserve.packagers.wheels import read_pins


def cpu_name() -> str:
    """The CPU model and whether it has AVX-512 VNNI (quantized kernels differ with it)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    return f"{model} ({'with' if 'avx512_vnni' in info else 'without'} AVX-512 VNNI)"


def naive_layer(target: Target, text: bool, dest: Path) -> Path:
    site = dest / "python"
    pins = [str(p) for p in read_pins(target, text)]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(site),
           "--no-compile", "--only-binary=:all:", "--implementation", "cp", "--python-version", target.python]
    for tag in target.platform_tags:
        cmd += ["--platform", tag]
    subprocess.run(cmd + pins, check=True)
    shutil.rmtree(site / "bin", ignore_errors=True)
    return site


def build_minilm_int8(work: Path) -> Path:
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import make_candidate, prepare
    from slimserve.optimizer.sources import packaged_model_dir, resolve_source

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = packaged_model_dir("all-MiniLM-L6-v2")
    prepared = prepare(resolve_source(str(folder)), work / "prep")
    out = work / "minilm-int8"
    with atomic_dir(out) as staging:
        make_candidate(prepared, "int8", staging)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--no-noblas", dest="noblas", action="store_false", help="leave out the --numpy no-blas layer")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lambda_layer.md")
    args = ap.parse_args()
    target = Target(args.python)
    exe = find_python(args.python)
    if exe is None:
        sys.exit(f"python{args.python} is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-layer-") as tmp_s:
        tmp = Path(tmp_s)
        model = args.model or build_minilm_int8(tmp)
        bundle = load_bundle(model)
        sites = {"naive": naive_layer(target, bundle.is_text, tmp / "naive"),
                 "slimserve": build_closure(target, bundle.is_text)}
        if args.noblas:
            sites["no-blas"] = build_closure(replace(target, numpy="no-blas"), bundle.is_text)
        slim_site = sites["slimserve"]
        tasks = {name: tmp / f"task-{name}" for name in sites}
        for name in sites:
            if name != "naive":
                write_tree(function_entries(bundle), tasks[name])
        # naive: the same handler's sources (no bytecode) with the optimize output as it is (model.onnx in
        # one file)
        naive_task = tasks["naive"]
        write_tree({name: source for name, source in function_entries(bundle).items()
                    if not name.startswith("model/") and not name.endswith(".pyc")}, naive_task)
        shutil.copytree(bundle.root, naive_task / "model")
        sizes = {}
        for name, site in sites.items():
            z = tmp / f"{name}.zip"
            unzipped = write_zip(z, tree_entries(site, "python"))
            sizes[name] = (z.stat().st_size, unzipped)
        totals: dict[str, list[float]] = {name: [] for name in sites}
        parts: dict[str, dict[str, list[float]]] = {name: {} for name in sites}
        event = sample_event(bundle.manifest.to_dict())
        for _ in range(args.runs):
            for name, site in sites.items():
                task = tasks[name]
                cold = measure_cold_start([task, site], task / "model", args.python, event, runs=1, warm_runs=3,
                                          text=bundle.is_text, executable=exe)
                totals[name].append(cold.total_ms)
                for key in ("import_ms", "load_ms", "first_inference_ms", "peak_rss_mb"):
                    parts[name].setdefault(key, []).append(getattr(cold, key))
        med = {n: statistics.median(v) for n, v in totals.items()}
        info = closure_info(slim_site)
        lines = [
            f"# Lambda layer: naive vs slimserve ({target.lambda_runtime}, {target.arch})", "",
            (f"Model: `{bundle.manifest.to_dict().get('source', {}).get('path', model)}` recipe "
            f"`{bundle.manifest.recipe}`, {bundle.model_path.stat().st_size / 1e6:.1f} MB model file."),
            f"Pins: {', '.join(info['pins'])}. Bytecode: {info['bytecode']}, sources shipped: {info['sources']}.",
            (f"Machine: {platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs visible (shared with other "
            f"jobs), {platform.platform()}; interpreter {exe}."),
            (f"Cold start = import + load + first inference in a fresh `-I -S -B` process; "
            f"{args.runs} runs each, interleaved; medians."), "",
            "| layout | layer zipped | layer unzipped | import ms | load ms | first inference ms | total ms | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in sites:
            p = {k: statistics.median(v) for k, v in parts[name].items()}
            lines.append(f"| {name} | {sizes[name][0] / 1e6:.1f} MB | {sizes[name][1] / 1e6:.1f} MB | "
                         f"{p['import_ms']:.0f} | {p['load_ms']:.0f} | {p['first_inference_ms']:.0f} | "
                         f"{med[name]:.0f} | {p['peak_rss_mb']:.0f} |")
        lines += ["", (f"Ratios slimserve / naive: zipped {sizes['slimserve'][0] / sizes['naive'][0]:.2f}x, "
                      f"unzipped {sizes['slimserve'][1] / sizes['naive'][1]:.2f}x, "
                      f"cold start {med['slimserve'] / med['naive']:.2f}x (issue 4 requires <= 0.70x)."), "",
                  *([(f"`--numpy no-blas` / slimserve: zipped {sizes['no-blas'][0] / sizes['slimserve'][0]:.2f}x "
                      f"({(sizes['slimserve'][0] - sizes['no-blas'][0]) / 1e6:.1f} MB less; issue 14 asks a text "
                      f"layer <= 25 MB zipped), cold start {med['no-blas'] / med['slimserve']:.2f}x."), ""]
                    if "no-blas" in sites else []),
                  "Raw totals (ms): " + "; ".join(f"{n}: {', '.join(f'{v:.0f}' for v in totals[n])}" for n in totals)]
        text = "\n".join(lines) + "\n"
        print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
