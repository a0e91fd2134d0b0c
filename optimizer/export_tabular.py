"""Fitted scikit-learn / XGBoost / LightGBM models -> ONNX (skl2onnx, onnxmltools), and the original as reference.

Inputs. A model fitted on a frame with string columns (a ColumnTransformer that one-hot encodes `city`) cannot
take one numeric matrix, so the graph gets one input per column, `[N, 1]`, named after the feature:
`tensor(string)` for columns an encoder fitted on strings, `tensor(float)` for the others (skl2onnx's own
path; a pipeline the ColumnTransformer selects columns of by name is converted the same way). Any other model
(numeric features only, e.g. an XGBoost or a scaler + logistic regression fitted on a numeric frame or an
array) gets one `float` matrix `[N, n_features]`: one input, one copy, which is what TreeEnsemble and
MatMul take anyway. Either way the runtime section lists every feature (name, kind, and for strings the
known categories when the encoder refuses unknown ones), so the handler takes records by feature name or
positional rows and builds the feeds itself.

Numbers are float32 in the graph: sklearn's trees and XGBoost compare float32 features already; a scaler
or a linear model computes in float32 instead of float64 (differences ~1e-7, measured and reported by
fidelity), and LightGBM's double thresholds become float32 (a row within a float32 step of a threshold can
take the other branch: fidelity reports it).

Classifiers are converted with zipmap off (probabilities as a tensor, not a list of dicts) and their
`classes_` recorded as JSON values (ints stay ints, strings strings), which is what the handler answers.
The reference is the original estimator's `predict`/`predict_proba` on the evaluation rows as they were
read (float64 numbers, ints, strings), so fidelity includes what the graph's float32 inputs change.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer.exported import Exported, Feed
from slimserve.optimizer.sources import TabularSource

OPSET = {"": 17, "ai.onnx.ml": 3}
MATRIX_INPUT = "input"
DEFAULT_MAX_BATCH = 1024  # rows per request; max_elements bounds rows × features as well
# Types a .skops file may name beyond skops' own default allowlist (numpy, scipy and most scikit-learn
# estimators): the rest of scikit-learn (its Cython tree structures), the estimators of the two boosting
# libraries slimserve converts and the container LightGBM keeps. Anything else (a user's own class, a
# function, os/subprocess...) is refused unless --allow-pickle says the file is trusted.
TRUSTED_PREFIXES = ("sklearn.", "xgboost.", "lightgbm.")
TRUSTED_TYPES = ("collections.OrderedDict",)
INSTALL_HINT = "pip install 'slimserve[tabular]' (skl2onnx, onnxmltools, skops, xgboost, lightgbm, pandas)"


@dataclass
class Feature:
    name: str
    kind: str  # "number" | "string"
    categories: list[str] | None = None  # strings the encoder knows, when it refuses unknown ones

    def as_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.categories is not None:
            spec["categories"] = self.categories
        return spec


@dataclass
class Schema:
    task: str  # tabular-classification | tabular-regression
    layout: str  # "columns" | "matrix"
    features: list[Feature]
    classes: list[Any] = field(default_factory=list)
    probabilities: bool = False
    estimator: str = ""


def _require() -> None:
    try:
        import skl2onnx  # noqa: F401
    except ImportError:
        raise SlimserveError("converting scikit-learn models needs skl2onnx, which is not installed",
                             hint=INSTALL_HINT) from None


# -- loading -------------------------------------------------------------------------------------------
def load_estimator(source: TabularSource) -> Any:
    """The fitted estimator in `source`; a .skops file naming types outside the allowlist is refused."""
    if source.format == "pickle":
        import joblib

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return joblib.load(source.path)
        except Exception as exc:  # noqa: BLE001  # a pickle fails in many ways (missing module, truncation)
            raise SlimserveError(f"cannot load {source.path}: {type(exc).__name__}: {first_line(exc)}",
                                 hint="load it with the library versions it was saved with") from None
    try:
        import skops.io as sio
    except ImportError:
        raise SlimserveError(f"loading {source.path} needs skops, which is not installed", hint=INSTALL_HINT) from None
    try:
        untrusted = sio.get_untrusted_types(file=source.path)
    except Exception as exc:  # noqa: BLE001  # not a zip, or not a skops file
        raise SlimserveError(f"{source.path} is not a readable .skops file: {first_line(exc)}") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES) and t not in TRUSTED_TYPES]
    if refused and not source.allow_pickle:
        raise SlimserveError(f"{source.path} names types slimserve does not load by default: {', '.join(refused)}",
                             hint="these could run code while loading; pass --allow-pickle if you trust this file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sio.load(source.path, trusted=list(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise SlimserveError(f"cannot load {source.path}: {type(exc).__name__}: {first_line(exc)}",
                             hint="load it with the library versions it was saved with") from None


# -- what the model takes ------------------------------------------------------------------------------
def _steps(estimator: Any) -> Iterator[Any]:
    """Every estimator inside `estimator` (pipelines, column transformers, nested), itself included."""
    yield estimator
    for _, step in getattr(estimator, "steps", None) or []:
        yield from _steps(step)
    for item in getattr(estimator, "transformers_", None) or []:
        yield from _steps(item[1])


def final_estimator(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return final_estimator(steps[-1][1]) if steps else estimator


def _string_columns(estimator: Any) -> dict[str, list[str] | None]:
    """Columns an encoder was fitted on as strings -> their categories when unknown ones are an error."""
    found: dict[str, list[str] | None] = {}
    for step in _steps(estimator):
        for item in getattr(step, "transformers_", None) or []:
            _, transformer, columns = item
            first = final_first(transformer)
            categories = getattr(first, "categories_", None)
            if categories is None or not isinstance(columns, (list, tuple, np.ndarray)):
                continue
            for column, values in zip(columns, categories):
                if np.asarray(values).dtype.kind in "OUS" and isinstance(column, str):
                    strict = getattr(first, "handle_unknown", "error") == "error"
                    found[column] = [str(v) for v in values] if strict else None
    return found


def final_first(transformer: Any) -> Any:
    """The first step of a nested pipeline (the one that sees the raw column), or the transformer."""
    steps = getattr(transformer, "steps", None)
    return final_first(steps[0][1]) if steps else transformer


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    return str(value)


def describe(estimator: Any) -> Schema:
    """Task, input layout, features and classes of a fitted estimator; one clear error if unsupported."""
    from sklearn.base import is_classifier, is_regressor

    final = final_estimator(estimator)
    name = type(final).__name__
    if type(final).__module__.startswith(("xgboost.core", "lightgbm.basic")):
        raise SlimserveError(f"{name} is a raw booster: slimserve converts the scikit-learn wrappers",
                             hint="save XGBClassifier/XGBRegressor or LGBMClassifier/LGBMRegressor instead")
    if is_classifier(estimator):
        task = "tabular-classification"
    elif is_regressor(estimator):
        task = "tabular-regression"
    else:
        raise SlimserveError(f"{name} is neither a classifier nor a regressor",
                             hint="slimserve serves fitted classifiers and regressors (and pipelines ending in one)")
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        raise SlimserveError(f"{name} is not fitted (it has no n_features_in_)", hint="fit it before saving it")
    names = getattr(estimator, "feature_names_in_", None)
    names = [str(n) for n in names] if names is not None else [f"x{i}" for i in range(int(count))]
    strings = _string_columns(estimator)
    column_transformer = any(hasattr(step, "transformers_") for step in _steps(estimator))
    layout = "columns" if strings or (column_transformer and getattr(estimator, "feature_names_in_", None) is not None) \
        else "matrix"
    features = [Feature(n, "string", strings[n]) if n in strings else Feature(n, "number") for n in names]
    schema = Schema(task=task, layout=layout, features=features, estimator=_estimator_name(estimator))
    if task == "tabular-classification":
        schema.classes = [_json_value(c) for c in estimator.classes_]
        schema.probabilities = hasattr(estimator, "predict_proba")
    return schema


def _estimator_name(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return f"Pipeline({', '.join(_estimator_name(s) for _, s in steps)})"
    items = getattr(estimator, "transformers_", None)
    if items:
        inner = ", ".join(_estimator_name(t) for _, t, _ in items if not isinstance(t, str))
        return f"ColumnTransformer({inner})"
    return type(estimator).__name__


# -- conversion ----------------------------------------------------------------------------------------
_REGISTERED = False


def _register_boosters() -> None:
    """Let skl2onnx convert XGBoost/LightGBM models (alone or inside pipelines) with onnxmltools' converters."""
    global _REGISTERED
    if _REGISTERED:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                    convert_xgboost, options=options)
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                    convert_xgboost)
    except ImportError:
        pass
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                    convert_lightgbm, options=options)
        update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                    convert_lightgbm, options={"split": None})
    except ImportError:
        pass
    _REGISTERED = True


def initial_types(schema: Schema) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if schema.layout == "matrix":
        return [(MATRIX_INPUT, FloatTensorType([None, len(schema.features)]))]
    return [(f.name, StringTensorType([None, 1]) if f.kind == "string" else FloatTensorType([None, 1]))
            for f in schema.features]


def _anonymous_boosters(estimator: Any) -> Any:
    """A copy of `estimator` whose XGBoost boosters forget their feature names: onnxmltools reads split
    features as `f<index>` only. The original (the reference) keeps its names."""
    if not any(type(step).__module__.startswith("xgboost.") for step in _steps(estimator)):
        return estimator
    import copy

    clone = copy.deepcopy(estimator)
    for step in _steps(clone):
        if type(step).__module__.startswith("xgboost.") and hasattr(step, "get_booster"):
            step.get_booster().feature_names = None
    return clone


# A float32 feature x and a double threshold t: `x <= t` holds exactly when `x <= t32` with t32 the largest
# float32 not above t (and `x < t` when `x < ` the smallest float32 not below t). The converters round t to
# the NEAREST float32, which sends the rows between t and t32 down the other branch: LightGBM keeps double
# thresholds (a measured 7% regression error on one diabetes row), scikit-learn's are midpoints of float32
# values (rarely representable). Rounding each in the direction of its comparison keeps every float32 row
# on the branch the original model takes.
_ROUND_DOWN = ("BRANCH_LEQ", "BRANCH_GT")
_ROUND_UP = ("BRANCH_LT", "BRANCH_GTE")


def _exact_thresholds(attrs: dict[str, Any]) -> dict[str, Any]:
    values, modes = attrs.get("nodes_values"), attrs.get("nodes_modes")
    if values is not None and modes is not None:
        exact = np.asarray(values, dtype=np.float64).reshape(-1)
        rounded = exact.astype(np.float32)
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in modes]
        for i, mode in enumerate(names):
            if mode in _ROUND_DOWN and float(rounded[i]) > exact[i]:
                rounded[i] = np.nextafter(rounded[i], np.float32(-np.inf))
            elif mode in _ROUND_UP and float(rounded[i]) < exact[i]:
                rounded[i] = np.nextafter(rounded[i], np.float32(np.inf))
        attrs["nodes_values"] = rounded
    for key, value in attrs.items():  # HistGradientBoosting passes numpy booleans where ONNX wants ints
        if isinstance(value, list) and any(isinstance(v, (bool, np.bool_)) for v in value):
            attrs[key] = [int(v) for v in value]
    return attrs


@contextmanager
def _tree_nodes_fixed() -> Iterator[None]:
    """skl2onnx's node factory, with tree-ensemble attributes made exact (see _exact_thresholds)."""
    from skl2onnx.common import _container

    original = _container.make_node

    def make_node(op_type: str, inputs: Any, outputs: Any, name: Any = None, **attrs: Any) -> Any:
        if op_type.startswith("TreeEnsemble"):
            attrs = _exact_thresholds(attrs)
        return original(op_type, inputs, outputs, name=name, **attrs)

    _container.make_node = make_node
    try:
        yield
    finally:
        _container.make_node = original


def convert(estimator: Any, schema: Schema) -> Any:
    """The ONNX model (probabilities as a tensor), or one clear error naming what could not be converted."""
    _require()
    from skl2onnx import convert_sklearn

    _register_boosters()
    estimator = _anonymous_boosters(estimator)
    options: dict[int, dict[str, Any]] = {}
    if schema.task == "tabular-classification":
        options = {id(step): {"zipmap": False} for step in _steps(estimator) if hasattr(step, "classes_")}
    try:
        with warnings.catch_warnings(), _tree_nodes_fixed():
            warnings.simplefilter("ignore")
            model = convert_sklearn(estimator, initial_types=initial_types(schema), options=options,
                                   target_opset=dict(OPSET))
    except Exception as exc:  # noqa: BLE001  # skl2onnx raises RuntimeError, ValueError, NameError...
        reason = first_line(exc).split(" and attributes=")[0]
        if "Unable to find a shape calculator" in reason or "Unable to find" in reason:
            reason = f"skl2onnx has no converter for {reason.split('type ')[-1].split(chr(10))[0][:120]}"
        raise SlimserveError(f"cannot convert {schema.estimator} to ONNX: {reason[:300]}",
                             hint="supported: scikit-learn pipelines of scalers/encoders/ColumnTransformer with "
                                  "linear models, trees, forests, gradient boosting; XGBoost; LightGBM") from None
    _dedupe_opsets(model)
    return model


def _dedupe_opsets(model: Any) -> None:
    """skl2onnx can list the default domain twice (given a target opset per domain); onnxruntime keeps both
    when it saves an optimized model, and its quantizer then refuses the file ("Failed to find proper
    ai.onnx domain"). One entry per domain, the highest version."""
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), int(entry.version))
    del model.opset_import[:]
    for domain, version in versions.items():
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


def output_names(model: Any, schema: Schema) -> dict[str, str]:
    """Which graph output is the label, the probabilities, the regression value."""
    names = [o.name for o in model.graph.output]
    if schema.task == "tabular-regression":
        return {"value": names[0]}
    found = {"label": names[0]}
    if len(names) > 1:
        found["probabilities" if schema.probabilities else "scores"] = names[1]
    return found


def runtime_spec(schema: Schema, outputs: dict[str, str]) -> dict[str, Any]:
    tabular: dict[str, Any] = {"layout": schema.layout, "features": [f.as_dict() for f in schema.features],
                               "outputs": outputs, "estimator": schema.estimator}
    if schema.layout == "matrix":
        tabular["input"] = MATRIX_INPUT
    spec: dict[str, Any] = {"kind": "tabular", "task": schema.task, "max_batch": DEFAULT_MAX_BATCH,
                            "tabular": tabular}
    if schema.task == "tabular-classification":
        spec["labels"] = [str(c) for c in schema.classes]
        tabular["classes"] = schema.classes
        tabular["probabilities"] = schema.probabilities
    return spec


# -- the reference -------------------------------------------------------------------------------------
def frame_from_feeds(schema: Schema, estimator: Any, feed: Feed) -> Any:
    """The estimator's input rebuilt from ONNX feeds: a pandas frame when it was fitted on one."""
    if schema.layout == "matrix":
        matrix = np.asarray(feed[MATRIX_INPUT], dtype=np.float32)
        if getattr(estimator, "feature_names_in_", None) is None:
            return matrix
        import pandas as pd

        return pd.DataFrame(matrix, columns=[f.name for f in schema.features])
    import pandas as pd

    columns: dict[str, Any] = {}
    for f in schema.features:
        values = np.asarray(feed[f.name]).reshape(-1)
        columns[f.name] = values.astype(object) if f.kind == "string" else values.astype(np.float32)
    return pd.DataFrame(columns)


def frame_from_rows(schema: Schema, estimator: Any, rows: list[list[Any]]) -> Any:
    """The estimator's input from request rows as sent (float64 numbers, ints kept): what a deployment
    with scikit-learn would have passed it, so fidelity includes the graph's float32 inputs."""
    if getattr(estimator, "feature_names_in_", None) is None:
        return np.asarray(rows, dtype=np.float64)
    import pandas as pd

    return pd.DataFrame(rows, columns=[f.name for f in schema.features])


def reference_runner(estimator: Any, schema: Schema, outputs: dict[str, str]) -> Any:
    def run(feed: Feed) -> dict[str, np.ndarray]:
        return predict(frame_from_feeds(schema, estimator, feed))

    def run_rows(rows: list[list[Any]]) -> dict[str, np.ndarray]:
        return predict(frame_from_rows(schema, estimator, rows))

    def predict(frame: Any) -> dict[str, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if schema.task == "tabular-regression":
                value = np.asarray(estimator.predict(frame), dtype=np.float64)
                return {outputs["value"]: value.reshape(value.shape[0], -1)}
            result = {outputs["label"]: np.asarray(estimator.predict(frame))}
            if "probabilities" in outputs:
                result[outputs["probabilities"]] = np.asarray(estimator.predict_proba(frame), dtype=np.float64)
            elif "scores" in outputs and hasattr(estimator, "decision_function"):
                result[outputs["scores"]] = np.asarray(estimator.decision_function(frame), dtype=np.float64)
        return result

    run.rows = run_rows  # type: ignore[attr-defined]  # families/tabular.reference_outputs uses it
    return run


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("scikit-learn", "skl2onnx", "onnxmltools", "xgboost", "xgboost-cpu", "lightgbm", "skops"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def export_tabular(source: TabularSource, work_dir: Path) -> Exported:
    _require()
    estimator = load_estimator(source)
    schema = describe(estimator)
    model = convert(estimator, schema)
    out = Path(work_dir) / "export-tabular"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    path.write_bytes(model.SerializeToString())
    try:
        from slimserve.optimizer.onnx_io import ort_session

        ort_session(path)
    except SlimserveError as exc:
        raise ToolError(f"the converted {schema.estimator} does not load in onnxruntime: {exc.message}",
                        hint="report it with the model's pipeline; another estimator may convert") from None
    outputs = output_names(model, schema)
    return Exported(onnx_path=path, runtime=runtime_spec(schema, outputs),
                    reference=reference_runner(estimator, schema, outputs),
                    reference_kind=f"{_library(estimator)} predict", source_info={
                        "format": source.format, "estimator": schema.estimator, "converter": library_versions()})


def _library(estimator: Any) -> str:
    root = type(final_estimator(estimator)).__module__.split(".")[0]
    return {"sklearn": "scikit-learn"}.get(root, root)
