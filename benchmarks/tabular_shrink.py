"""What shrinks a tree ensemble's ONNX file, measured: the choices slimserve's tabular export makes.

    .venv/bin/python benchmarks/tabular_shrink.py [--write benchmarks/results/tabular_shrink.md]

Trains a 400-tree RandomForestClassifier (depth 12) and a 300-round LightGBM classifier on scikit-learn's
bundled covertype-like synthetic data (make_classification, 20 features), converts each with skl2onnx /
onnxmltools under each choice, and reports the .onnx bytes, gzip bytes (what a zip stores) and whether the
ONNX answers agree with the original's predict (labels) on 2,000 rows. int8/int4/fp16 are not in the table:
they refuse tree ensembles (their thresholds and leaf values are operator attributes, not weight tensors).
"""

from __future__ import annotations

import argparse
import gzip
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _size(model: Any) -> tuple[int, int]:
    data = model.SerializeToString()
    return len(data), len(gzip.compress(data, compresslevel=6))


def _agree(model: Any, x: np.ndarray, want: np.ndarray, dtype: Any = np.float32) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = session.run(None, {session.get_inputs()[0].name: x.astype(dtype)})[0]
    return float((np.asarray(labels).ravel() == want).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from lightgbm import LGBMClassifier
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=12000, n_features=20, n_informative=12, n_classes=4, random_state=0)
    train, test = slice(0, 10000), slice(10000, 12000)
    forest = RandomForestClassifier(n_estimators=400, max_depth=12, random_state=0, n_jobs=2).fit(x[train], y[train])
    gbm = LGBMClassifier(n_estimators=300, num_leaves=31, random_state=0, verbose=-1).fit(x[train], y[train])
    want_forest, want_gbm = forest.predict(x[test]), gbm.predict(x[test])
    rows = []

    def add(name: str, model: Any, want: np.ndarray, dtype: Any = np.float32) -> None:
        raw, zipped = _size(model)
        rows.append((name, raw, zipped, _agree(model, x[test], want, dtype)))

    floats = [("input", FloatTensorType([None, 20]))]
    for ml in (1, 3):
        for zipmap in (True, False):
            model = convert_sklearn(forest, initial_types=floats, target_opset={"": 17, "ai.onnx.ml": ml},
                                    options={id(forest): {"zipmap": zipmap}})
            add(f"forest, float32, ai.onnx.ml {ml}, zipmap {'on' if zipmap else 'off'}", model, want_forest)
    model = convert_sklearn(forest, initial_types=[("input", DoubleTensorType([None, 20]))],
                            target_opset={"": 17, "ai.onnx.ml": 3}, options={id(forest): {"zipmap": False}})
    add("forest, float64 (double thresholds as tensors), ai.onnx.ml 3, zipmap off", model, want_forest, np.float64)
    for zipmap in (True, False):
        model = convert_lightgbm(gbm, initial_types=[("input", MLFloat([None, 20]))], target_opset=15,
                                 zipmap=zipmap)
        add(f"lightgbm, float32, zipmap {'on' if zipmap else 'off'}", model, want_gbm)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    lines = ["# Tree ensembles: what changes the ONNX size", "",
             (f"`.venv/bin/python benchmarks/tabular_shrink.py` on {cpu}; agreement = ONNX labels equal to the "
             "original's `predict` on 2,000 held-out rows."), "",
             "| conversion | .onnx bytes | gzip bytes | label agreement |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {raw:,} | {zipped:,} | {agree:.4f} |" for name, raw, zipped, agree in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
