"""A scikit-learn model on Lambda: slimserve's package vs the naive "pip install scikit-learn" layer.

    .venv/bin/python benchmarks/tabular_lambda.py [--out benchmarks/results/tabular_lambda.md]

Trains a ColumnTransformer(StandardScaler, OneHotEncoder) + RandomForest pipeline (400 trees) on a synthetic
mixed frame, then measures:
- naive: the wheels a Lambda layer needs to unpickle and run it (scikit-learn, scipy, numpy, joblib,
  threadpoolctl for cp312 manylinux x86_64, `pip download --no-deps`), unzipped size; cold start = a fresh
  python importing sklearn + joblib.load(model) + one predict (in this venv: same libraries);
- slimserve: `optimize --recipe fp32` then `package --target lambda`: layer.zip/function.zip unzipped
  sizes; cold start = a fresh python -I -S with only the unzipped layer + function on sys.path, importing
  lambda_handler (loads the model) and answering one request.
Medians of 5 fresh processes. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NAIVE = ["scikit-learn==1.9.1", "scipy==1.17.1", "numpy==2.4.6", "joblib==1.6.0", "threadpoolctl==3.8.0"]
RUNS = 5


def train(work: Path) -> tuple[Path, Path, Path]:
    import joblib
    import numpy as np
    import pandas as pd
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(50000, 15000, n).round(2),
                          "city": rng.choice(["Lyon", "Paris", "Nice", "Lille"], n),
                          "plan": rng.choice(["free", "pro"], n)})
    y = np.where((frame.age > 45) ^ (frame.city == "Paris") | (frame.income > 70000), "churn", "stay")
    model = Pipeline([("pre", ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"])])),
                      ("clf", RandomForestClassifier(n_estimators=400, max_depth=8, random_state=0))])
    model.fit(frame[:-200], y[:-200])
    sio.dump(model, work / "model.skops")
    joblib.dump(model, work / "model.joblib")
    frame[-200:].assign(target=y[-200:]).to_csv(work / "eval.csv", index=False)
    return work / "model.skops", work / "model.joblib", work / "eval.csv"


def unzipped(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def naive_layer(work: Path) -> int:
    wheels = work / "wheels"
    subprocess.run([PY, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(wheels), *NAIVE], check=True)
    site = work / "naive" / "python"
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    return unzipped(site)


def median_seconds(cmd: list[str], stdin: str = "") -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, input=stdin, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


NAIVE_COLD = """
import sys, joblib, pandas as pd
model = joblib.load(sys.argv[1])
print(model.predict(pd.DataFrame([{"age": 41, "income": 52000.0, "city": "Lyon", "plan": "pro"}])))
"""

SLIM_COLD = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
import lambda_handler
print(lambda_handler.handler({"inputs": [{"age": 41, "income": 52000.0, "city": "Lyon", "plan": "pro"}]}, None))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tabular_lambda.md")
    args = parser.parse_args()
    from slimserve.packagers.interpreters import find_python

    py312 = find_python("3.12")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        skops_path, pickle_path, eval_csv = train(work)
        naive_bytes = naive_layer(work)
        naive_s = median_seconds([PY, "-c", NAIVE_COLD, str(pickle_path)])
        out, pkg = work / "out", work / "pkg"
        subprocess.run([PY, "-m", "slimserve", "optimize", str(skops_path), "-o", str(out), "--eval", str(eval_csv),
                        "--recipe", "fp32"], check=True, capture_output=True)
        subprocess.run([PY, "-m", "slimserve", "package", str(out), "-o", str(pkg), "--target", "lambda", "--no-check"],
                       check=True, capture_output=True)
        manifest = json.loads((out / "slimserve.json").read_text())
        run = work / "run"
        for name, dest in (("layer.zip", run / "opt"), ("function.zip", run / "task")):
            with zipfile.ZipFile(pkg / name) as zf:
                zf.extractall(dest)
        slim_layer, slim_function = unzipped(run / "opt"), unzipped(run / "task")
        paths = json.dumps([str(run / "task"), str(run / "opt" / "python")])
        slim_s = median_seconds([str(py312 or PY), "-I", "-S", "-c", SLIM_COLD, paths])
        fidelity = manifest["fidelity"]
        lines = [
            "# A scikit-learn pipeline on AWS Lambda: slimserve vs pip install scikit-learn",
            "",
            ("`.venv/bin/python benchmarks/tabular_lambda.py`: ColumnTransformer(StandardScaler, OneHotEncoder) + "
            "RandomForestClassifier(400 trees, depth 8), 4 features (2 strings). Cold start = median of "
            f"{RUNS} fresh processes: import + model load + one prediction (this machine, not Lambda)."),
            "",
            "| deployment | unzipped size | model file | cold start |",
            "|---|---|---|---|",
            (f"| naive layer ({', '.join(NAIVE)}) + model.joblib | {naive_bytes / 1e6:.1f} MB + "
            f"{pickle_path.stat().st_size / 1e6:.2f} MB | {pickle_path.stat().st_size / 1e6:.2f} MB (joblib) | "
            f"{naive_s * 1000:.0f} ms |"),
            (f"| slimserve fp32 (onnxruntime + numpy layer, function) | {slim_layer / 1e6:.1f} MB + "
            f"{slim_function / 1e6:.2f} MB | {manifest['model']['bytes'] / 1e6:.2f} MB (ONNX) | {slim_s * 1000:.0f} ms |"),
            "",
            (f"Fidelity of the served model: {fidelity['metric']} {fidelity['mean']} on {fidelity['samples']} rows, "
            f"max |probability error| {fidelity['details']['max_abs_probability_error']:.2e}."),
        ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
