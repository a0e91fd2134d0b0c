"""Tabular models (scikit-learn, XGBoost, LightGBM): evaluation rows, reference and fidelity.

There is no built-in data for an arbitrary model: its features are its own. So `--eval` is required: a
CSV file with a header row, or JSON lines of records (`{"age": 41, "city": "Lyon", ...}` per line), e.g.
the held-out split of the training data. Columns that are not features (the target, an id) are ignored
and named in the evaluation description; a feature missing from the file is an error. CSV cells are typed
per column as pandas' read_csv would: a column whose every non-empty cell is a number is numeric, any
other column is text; an empty cell is a missing value, which the handler refuses (400), so such a row
makes --eval fail naming it.

The reference is the original estimator's `predict`/`predict_proba` (optimizer/export_tabular.py). Fidelity:
- classification: `label_agreement`, per row, of the served label with the estimator's `predict`; the
  maximum and mean absolute probability error in details (the handler answers probabilities too);
- regression: `within_tolerance`, per row, |served - predict| <= 1e-4 × the range of the reference
  predictions (their magnitude if they are all equal), so the metric is in [0, 1] whatever the target's
  unit; max/mean absolute error and the tolerance itself in details.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError
from slimserve.optimizer.exported import Exported, ReferenceRunner
from slimserve.optimizer.families.base import EvalBatch, EvalSet
from slimserve.optimizer.fidelity import Fidelity
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime import task_tabular
from slimserve.runtime.model_runtime import Encoded, LoadedModel, RequestLimits

ROWS_PER_REQUEST = 64
MAX_EVAL_ROWS = 5000
RELATIVE_TOLERANCE = 1e-4
EVAL_HINT = ("pass --eval rows.csv (a header row, then one row per sample) or rows.jsonl (one JSON record per "
             "line): a held-out split of the training data; the target column may stay in the file")


def _cell(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def load_csv(path: Path) -> list[dict[str, Any]]:
    """Records of a CSV file, each column typed as a whole (numbers, or text)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SlimserveError(f"--eval {path} is not a readable CSV file: {exc}", hint=EVAL_HINT) from None
    if not header or not rows:
        raise SlimserveError(f"--eval {path} has no header or no rows", hint=EVAL_HINT)
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise SlimserveError(f"--eval {path}: row {index + 2} has {len(row)} cells, the header {len(header)}",
                                 hint=EVAL_HINT)
    numeric = [all(r[c] == "" or _cell(r[c]) is not None for r in rows) for c in range(len(header))]
    records = []
    for row in rows:
        record: dict[str, Any] = {}
        for c, name in enumerate(header):
            text = row[c]
            record[name] = (None if text == "" else _cell(text)) if numeric[c] else text
        records.append(record)
    return records


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise SlimserveError(f"--eval {path}: line {number} is not a JSON object (a record)",
                                         hint=EVAL_HINT)
                records.append(record)
    except (OSError, UnicodeDecodeError) as exc:
        raise SlimserveError(f"--eval {path} is not readable: {exc}", hint=EVAL_HINT) from None
    except json.JSONDecodeError as exc:
        raise SlimserveError(f"--eval {path}: line {exc.lineno if hasattr(exc, 'lineno') else '?'} is not JSON",
                             hint=EVAL_HINT) from None
    if not records:
        raise SlimserveError(f"--eval {path} holds no records", hint=EVAL_HINT)
    return records


def load_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return load_jsonl(path)
    raise SlimserveError(f"--eval {path}: tabular models are evaluated on a .csv or .jsonl file of rows",
                         hint=EVAL_HINT)


def _features(runtime: dict[str, Any]) -> list[dict[str, Any]]:
    return list(runtime["tabular"]["features"])


def select_features(records: list[dict[str, Any]], features: list[dict[str, Any]], path: Path
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """The records restricted to the model's features (in its order), and the columns left out."""
    names = [str(f["name"]) for f in features]
    present = set().union(*(r.keys() for r in records))
    missing = [n for n in names if n not in present]
    if missing:
        raise SlimserveError(f"--eval {path} lacks feature {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                             hint=f"the model takes: {', '.join(names)[:400]}")
    ignored = sorted(present - set(names))
    selected = []
    for index, record in enumerate(records):
        row = {}
        for feature in features:
            name = str(feature["name"])
            if name not in record:
                raise SlimserveError(f"--eval {path}: record {index + 1} lacks feature {name!r}", hint=EVAL_HINT)
            value = record[name]
            if feature.get("kind") == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = _as_text(value)  # a CSV column of digits the model reads as text ("75001")
            row[name] = value
        selected.append(row)
    return selected, ignored


def _as_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class TabularFamily:
    tasks = task_tabular.TASKS

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        """Tabular runtime sections are written by optimizer/export_tabular.py (no Hugging Face folder)."""
        return base

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        raise SlimserveError(f"{source.path} is a Hugging Face folder, not a scikit-learn model",
                             hint="tabular models come from .skops (or, with --allow-pickle, .joblib/.pkl) files")

    def reference_outputs(self, exported: Exported, encoded: Encoded) -> dict[str, np.ndarray]:
        """The original estimator on the request's rows as sent (not the float32 feeds)."""
        rows_runner = getattr(exported.reference, "rows", None)
        if rows_runner is None:
            return exported.reference(encoded.feeds)
        outputs: dict[str, np.ndarray] = rows_runner(encoded.context)
        return outputs

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        if eval_path is None:
            raise SlimserveError("a tabular model needs evaluation rows: there is no built-in data for its features",
                                 hint=EVAL_HINT)
        records = load_records(Path(eval_path))
        return self._requests(records, [], Path(eval_path), len(records))

    def eval_set_for_runtime(self, runtime: dict[str, Any], eval_path: Path | None) -> EvalSet:
        """The --eval rows restricted to the model's features, in requests of ROWS_PER_REQUEST rows."""
        if eval_path is None:
            raise SlimserveError("a tabular model needs evaluation rows: there is no built-in data for its features",
                                 hint=EVAL_HINT)
        path = Path(eval_path)
        records = load_records(path)
        total = len(records)
        selected, ignored = select_features(records[:MAX_EVAL_ROWS], _features(runtime), path)
        return self._requests(selected, ignored, path, total)

    def _requests(self, records: list[dict[str, Any]], ignored: list[str], path: Path, total: int) -> EvalSet:
        requests = [records[i:i + ROWS_PER_REQUEST] for i in range(0, len(records), ROWS_PER_REQUEST)]
        note = f"; ignored columns: {', '.join(ignored)[:200]}" if ignored else ""
        cap = f", first {len(records)} of {total}" if total > len(records) else ""
        return EvalSet(requests=requests, calibration=requests,
                       description=f"{path} ({len(records)} rows{cap}{note})")

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """`batch` records: 0.0 for numbers, the first known category (or "") for strings."""
        record: dict[str, Any] = {}
        for feature in _features(runtime):
            if feature.get("kind") == "string":
                record[str(feature["name"])] = (feature.get("categories") or [""])[0]
            else:
                record[str(feature["name"])] = 0.0
        return [dict(record) for _ in range(batch)]

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """As many rows as max_batch and max_elements accept (trees cost the same whatever the values)."""
        features = _features(runtime)
        rows = max(1, min(limits.max_batch, limits.max_elements // max(1, len(features))))
        return self.sample_inputs(runtime, rows), f"{rows} rows × {len(features)} features"

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        if model.task == "tabular-regression":
            return _regression(model, batches, reference_name, eval_source)
        return _classification(model, batches, reference_name, eval_source)


def _classification(model: LoadedModel, batches: Sequence[EvalBatch], reference_name: str,
                    eval_source: str) -> Fidelity:
    agree: list[float] = []
    errors: list[np.ndarray] = []
    for batch in batches:
        ref = task_tabular.decode(model, batch.reference, batch.encoded, {})
        cand = task_tabular.decode(model, batch.candidate, batch.encoded, {})
        if len(ref["predictions"]) != len(cand["predictions"]):
            raise ValueError(f"{len(cand['predictions'])} predictions for {len(ref['predictions'])} rows")
        agree.extend(float(r == c) for r, c in zip(ref["predictions"], cand["predictions"]))
        if "probabilities" in ref and "probabilities" in cand:
            r_p, c_p = np.asarray(ref["probabilities"]), np.asarray(cand["probabilities"])
            if r_p.shape != c_p.shape:
                raise ValueError(f"probabilities changed shape: {r_p.shape} -> {c_p.shape}")
            errors.append(np.abs(r_p - c_p).max(axis=1))
    if not agree:
        raise ValueError("no evaluation rows")
    values = np.asarray(agree)
    details: dict[str, float] = {}
    if errors:
        err = np.concatenate(errors)
        details = {"max_abs_probability_error": float(err.max()), "mean_abs_probability_error": float(err.mean())}
    return Fidelity(metric="label_agreement", output=str(model.spec["tabular"]["outputs"]["label"]),
                    mean=round(float(values.mean()), 6), min=round(float(values.min()), 6), samples=len(agree),
                    reference=reference_name, eval_source=eval_source, details=details)


def _regression(model: LoadedModel, batches: Sequence[EvalBatch], reference_name: str, eval_source: str) -> Fidelity:
    refs, cands = [], []
    for batch in batches:
        ref = np.asarray(task_tabular.decode(model, batch.reference, batch.encoded, {})["predictions"], np.float64)
        cand = np.asarray(task_tabular.decode(model, batch.candidate, batch.encoded, {})["predictions"], np.float64)
        if ref.shape != cand.shape:
            raise ValueError(f"predictions changed shape: {ref.shape} -> {cand.shape}")
        refs.append(ref.reshape(ref.shape[0], -1))
        cands.append(cand.reshape(cand.shape[0], -1))
    if not refs:
        raise ValueError("no evaluation rows")
    reference, candidate = np.concatenate(refs), np.concatenate(cands)
    scale = float(np.ptp(reference)) or float(np.abs(reference).max()) or 1.0
    tolerance = RELATIVE_TOLERANCE * scale
    error = np.abs(reference - candidate).max(axis=1)
    if not np.isfinite(error).all():
        raise ValueError("the optimized model predicts NaN or infinity where the original does not")
    within = (error <= tolerance).astype(np.float64)
    return Fidelity(metric="within_tolerance", output=str(model.spec["tabular"]["outputs"]["value"]),
                    mean=round(float(within.mean()), 6), min=round(float(within.min()), 6), samples=len(within),
                    reference=reference_name, eval_source=eval_source, max_abs_error=float(error.max()),
                    mean_abs_error=float(error.mean()),
                    details={"tolerance": tolerance, "max_relative_error": float(error.max() / scale)
                             if math.isfinite(scale) else 0.0})


FAMILY = TabularFamily()
