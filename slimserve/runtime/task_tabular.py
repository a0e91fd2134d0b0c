"""Tabular models (scikit-learn pipelines, XGBoost, LightGBM): rows of features in, predictions out.

Shipped beside `model_runtime.py`; imports only the standard library and numpy.

Request: `{"inputs": [{"age": 41, "income": 52000.0, "city": "Lyon"}, ...]}` (records by feature name, in
any order) or `{"inputs": [[41, 52000.0, "Lyon"], ...]}` (rows, features in the model's order); one
record alone (`{"inputs": {...}}`) is one row. The manifest's `runtime.tabular.features` lists the
features (name, `number` or `string`, and for strings the known categories when the model refuses others).
Answer: `{"predictions": [...]}` (regression: floats; classification: the estimator's `classes_` values,
ints or strings as it was fitted) plus, for a classifier with `predict_proba`, `"probabilities": [[...]]`
(one column per class, in `"classes"` order, which the answer also carries).

400s (what scikit-learn itself would refuse, said once and by name): a missing or unknown feature, a row of
the wrong length, a number where a string goes or the reverse (booleans are not numbers), null/NaN or
infinity for a number (a model fitted without missing values would raise on them), a number beyond
float32, a category the model's encoder refuses (handle_unknown="error"). 413: more rows than `max_batch`
or more values than `max_elements`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if __package__:
    from .model_runtime import Encoded, InputError, RequestLimits
else:  # flat in the artifact
    from model_runtime import Encoded, InputError, RequestLimits  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .model_runtime import LoadedModel

TASKS = ("tabular-classification", "tabular-regression")
PARAMETERS: dict[str, dict[str, Any]] = {task: {} for task in TASKS}
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_STRING = 1024  # characters in one string feature (categories are short; a long one is refused early)


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    return values


class Schema:
    """The features of `runtime.tabular`, read once per model (setup) and validated."""

    def __init__(self, tabular: dict[str, Any]) -> None:
        self.layout = str(tabular.get("layout", "matrix"))
        self.features: list[dict[str, Any]] = list(tabular["features"])
        self.names = [str(f["name"]) for f in self.features]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.strings = [f.get("kind") == "string" for f in self.features]
        self.categories = [set(f["categories"]) if f.get("categories") is not None else None for f in self.features]
        self.input = str(tabular.get("input", "input"))
        self.outputs: dict[str, str] = dict(tabular.get("outputs") or {})
        self.classes: list[Any] = list(tabular.get("classes") or [])


def setup(model: LoadedModel) -> None:
    model.tabular = Schema(model.spec["tabular"])  # type: ignore[attr-defined]


def _schema(model: LoadedModel) -> Schema:
    schema = getattr(model, "tabular", None)
    if schema is None:
        schema = Schema(model.spec["tabular"])
        model.tabular = schema  # type: ignore[attr-defined]
    return schema


def _rows(inputs: Any, schema: Schema) -> list[list[Any]]:
    """Each request row as a list of values in feature order (records reordered by name)."""
    if isinstance(inputs, dict):
        inputs = [inputs]
    if not isinstance(inputs, list):
        raise InputError('"inputs" must be a list of records ({"feature": value}) or of rows ([value, ...])')
    if not inputs:
        raise InputError('"inputs" is empty')
    rows = []
    width = len(schema.names)
    for r, item in enumerate(inputs):
        if isinstance(item, dict):
            unknown = [k for k in item if k not in schema.index]
            if unknown:
                raise InputError(f"inputs[{r}]: unknown feature {str(unknown[0])[:100]!r} "
                                 f"(the model takes: {', '.join(schema.names)[:500]})")
            missing = [n for n in schema.names if n not in item]
            if missing:
                raise InputError(f"inputs[{r}]: missing feature {missing[0]!r}"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            rows.append([item[n] for n in schema.names])
        elif isinstance(item, list):
            if len(item) != width:
                raise InputError(f"inputs[{r}] has {len(item)} values; the model takes {width} "
                                 f"({', '.join(schema.names)[:500]})")
            rows.append(item)
        else:
            raise InputError(f"inputs[{r}] must be a record (object) or a row (list), not {type(item).__name__}")
    return rows


def _number(value: Any, r: int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "null" if value is None else type(value).__name__
        raise InputError(f"inputs[{r}] feature {name!r} must be a number, not {what}")
    if isinstance(value, float) and math.isnan(value):
        raise InputError(f"inputs[{r}] feature {name!r} is NaN: this model takes no missing values")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise InputError(f"inputs[{r}] feature {name!r} is infinite or beyond float32 ({value!r})")
    return float(value)


def _string(value: Any, r: int, name: str, categories: set[str] | None) -> str:
    if not isinstance(value, str):
        what = "null" if value is None else type(value).__name__
        raise InputError(f"inputs[{r}] feature {name!r} must be a string, not {what}")
    if len(value) > MAX_STRING:
        raise InputError(f"inputs[{r}] feature {name!r} is longer than {MAX_STRING} characters")
    if categories is not None and value not in categories:
        shown = ", ".join(repr(c) for c in sorted(categories)[:20])
        raise InputError(f"inputs[{r}] feature {name!r}: unknown category {value[:100]!r} (known: {shown}"
                         + (", ..." if len(categories) > 20 else "") + ")")
    return value


def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    schema = _schema(model)
    if limits is not None and isinstance(inputs, list):
        limits.check_batch(len(inputs), "rows")
    rows = _rows(inputs, schema)
    if limits is not None:
        limits.check_elements(len(rows) * len(schema.names))
    columns: list[list[Any]] = [[] for _ in schema.names]
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            name = schema.names[c]
            if schema.strings[c]:
                columns[c].append(_string(value, r, name, schema.categories[c]))
            else:
                columns[c].append(_number(value, r, name))
    feeds: dict[str, np.ndarray] = {}
    if schema.layout == "matrix":
        if any(schema.strings):
            raise InputError("this model's manifest is inconsistent: string features in a matrix input")
        feeds[schema.input] = np.asarray(columns, dtype=np.float32).T.reshape(len(rows), len(schema.names))
    else:
        for c, name in enumerate(schema.names):
            dtype: Any = object if schema.strings[c] else np.float32
            feeds[name] = np.asarray(columns[c], dtype=dtype).reshape(len(rows), 1)
    return Encoded(feeds=feeds, count=len(rows), context=rows, single=isinstance(inputs, dict))


def _label(value: Any, classes: list[Any]) -> Any:
    """A label output value as the estimator's class (JSON type preserved: 1, not "1" nor 1.0)."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    for cls in classes:
        if str(cls) == text or (isinstance(cls, (int, float)) and not isinstance(cls, bool)
                                and isinstance(value, (int, float, np.number)) and float(cls) == float(value)):
            return cls
    return value.item() if isinstance(value, np.generic) else value


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    schema = _schema(model)
    if model.task == "tabular-regression":
        values = np.asarray(outputs[schema.outputs["value"]], dtype=np.float64)
        values = values.reshape(values.shape[0], -1)
        flat = values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()
        return {"predictions": flat}
    labels = np.asarray(outputs[schema.outputs["label"]]).reshape(-1)
    answer: dict[str, Any] = {"predictions": [_label(v, schema.classes) for v in labels.tolist()]}
    name = schema.outputs.get("probabilities")
    if name is not None:
        probs = np.asarray(outputs[name], dtype=np.float64)
        answer["probabilities"] = probs.reshape(probs.shape[0], -1).tolist()
        answer["classes"] = schema.classes
    return answer
