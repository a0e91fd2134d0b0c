"""Optimize = prepare once (export + reference outputs), then turn a recipe into a candidate folder.

`prepare` is the expensive, recipe-independent part; `compare` reuses one `Prepared` for every recipe.
`make_candidate` runs the recipe's steps file to file and measures fidelity against the reference.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.manifest import (
    SCHEMA_VERSION,
    file_entries,
    library_versions,
    sha256_file,
    sha256_tree,
    write_manifest,
)
from slimserve.optimizer import eval_inputs, eval_shapes, step_options
from slimserve.optimizer.exported import Exported
from slimserve.optimizer.families.base import EvalBatch, Family, family_for
from slimserve.optimizer.fidelity import Fidelity, compare_outputs
from slimserve.optimizer.onnx_io import describe_model, load_onnx, model_files, ort_message, ort_session
from slimserve.optimizer.recipes import parse_recipe
from slimserve.optimizer.sources import HfFolderSource, OnnxSource, Source, TabularSource
from slimserve.optimizer.step_cache import StepCache, run_step
from slimserve.optimizer.steps.base import StepContext
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.runtime.model_runtime import Encoded, InputError, LoadedModel

Feed = dict[str, np.ndarray]


@dataclass
class Prepared:
    """Everything recipes share: the fp32 export, evaluation/calibration feeds and reference outputs."""

    source: Source
    exported: Exported
    work_dir: Path
    feeds: list[Feed]
    calibration: list[Feed]
    reference_primary: list[np.ndarray]
    eval_source: str
    export_seconds: float
    reference_seconds: float
    source_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)
    cache: StepCache | None = None  # step results by content, shared by every recipe built from this
    # task families (optimizer/families): each evaluation request as the runtime encoded it, and the
    # original model's raw outputs on it; empty for the sentence tasks and raw tensors
    encoded: list[Encoded] = field(default_factory=list)
    reference_outputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    # the evaluation feed at other sizes the original runs on, with its output shapes (check_input_sizes)
    shape_probes: list[tuple[Feed, dict[str, tuple[int, ...]]]] = field(default_factory=list)


def _onnx_source(source: OnnxSource) -> Exported:
    info = describe_model(source.path)
    session = ort_session(source.path, user_model=True)
    output_names = [o.name for o in session.get_outputs()]

    def run_fp32(feed: Any) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(None, dict(feed))))

    runtime = {"kind": "tensor", "task": "tensor", "max_batch": 64}
    extra = tuple(source.path.parent / f for f in info["external_data"])
    return Exported(onnx_path=source.path, runtime=runtime, reference=run_fp32, reference_kind="onnxruntime-fp32",
                    extra_files=(), source_info={"external_data": [str(p.name) for p in extra]})


def _source_digest(source: Source) -> tuple[str, str]:
    if isinstance(source, OnnxSource):
        return str(source.path.absolute()), sha256_tree(model_files(source.path), source.path.parent)
    if isinstance(source, HfFolderSource):
        files = [p for p in source.path.rglob("*") if p.is_file() and ".git" not in p.parts]
        return str(source.path.absolute()), sha256_tree(files, source.path)
    if isinstance(source, TabularSource):
        return str(source.path.absolute()), sha256_file(source.path)
    return source.factory, ""


def export_source(source: Source, work_dir: Path) -> Exported:
    if isinstance(source, OnnxSource):
        return _onnx_source(source)
    if isinstance(source, HfFolderSource):
        from slimserve.optimizer.export_hf import export_hf_folder

        return export_hf_folder(source, work_dir)
    if isinstance(source, TabularSource):
        from slimserve.optimizer.export_tabular import export_tabular

        return export_tabular(source, work_dir)
    from slimserve.optimizer.export_torch import export_torch_module

    return export_torch_module(source, work_dir)


def _primary(model: LoadedModel | None, exported: Exported, outputs: dict[str, np.ndarray], feed: Feed) -> np.ndarray:
    """The output fidelity is judged on: post-processed text output, or all tensor outputs side by side."""
    if model is not None:
        return model.postprocess(outputs, feed)
    arrays = [np.asarray(outputs[n], dtype=np.float64) for n in sorted(outputs)]
    leading = {a.shape[0] if a.ndim else 1 for a in arrays}
    if len(leading) == 1:  # one row per batch item
        return np.concatenate([a.reshape(a.shape[0] if a.ndim else 1, -1) for a in arrays], axis=1)
    # outputs that do not share a batch axis (a recurrent state [2, batch, n] beside [batch, 1]): the feed is the sample
    return np.concatenate([a.reshape(1, -1) for a in arrays], axis=1)


def prepare(source: Source, work_dir: Path, eval_path: Path | None = None, progress: Progress = NULL_PROGRESS) -> Prepared:
    """Export the source once and compute the reference outputs every candidate is compared with."""
    start = time.perf_counter()
    with progress.stage("export to ONNX (fp32)"):
        exported = export_source(source, work_dir)
    export_seconds = time.perf_counter() - start
    source_path, source_sha = _source_digest(source)

    start = time.perf_counter()
    info = describe_model(exported.onnx_path)
    family = family_for(exported.runtime.get("task", ""))
    if family is not None:
        return _prepare_family(source, exported, family, work_dir, eval_path, progress, export_seconds, start)
    probes: list[tuple[Feed, dict[str, tuple[int, ...]]]] = []
    if exported.runtime["kind"] == "text":
        encoder = LoadedModel(exported.onnx_path.parent, threads=0, model_file=exported.onnx_path, spec=exported.runtime)
        texts = eval_inputs.load_texts(eval_path) if eval_path else eval_inputs.builtin_texts(eval_inputs.BUILTIN_EVAL)
        calib_texts = texts if eval_path else eval_inputs.builtin_texts(eval_inputs.BUILTIN_CALIB)
        feeds = eval_inputs.text_feeds(texts, encoder.encode)
        calibration = [encoder.encode([t]) for t in calib_texts]
        eval_source = str(eval_path) if eval_path else f"built-in {eval_inputs.BUILTIN_EVAL} ({len(texts)} texts)"
    else:
        encoder = None
        names = [i["name"] for i in info["inputs"]]
        if eval_path and Path(eval_path).is_dir():
            feeds = eval_inputs.load_npz_folder(eval_path, names)
            eval_source = f"{eval_path} ({len(feeds)} feeds)"
        elif eval_path:
            if Path(eval_path).suffix != ".npz":
                raise SlimserveError(f"--eval {eval_path}: models that do not take text need an .npz of named "
                                     "input arrays, or a folder of .npz files (one feed each)")
            feeds = eval_inputs.load_npz(eval_path, names)
            eval_source = str(eval_path)
        elif exported.input_shapes:  # a PyTorch factory exported for the shapes the user declared
            feeds = eval_inputs.synthetic_feeds(info["inputs"], exported.input_shapes)
            eval_source = f"synthetic seeded inputs ({len(feeds)} samples; {eval_shapes.describe(feeds[0])})"
        else:
            synthetic = eval_shapes.synthetic_inputs(info["inputs"], exported.reference,
                                                     pinned=dict(source.input_shapes)
                                                     if isinstance(source, OnnxSource) else None)
            feeds, eval_source = synthetic.feeds, synthetic.description
        calibration = feeds
        probes = [(p, shapes) for p in eval_shapes.probe_feeds(feeds[0], info["inputs"])
                  if (shapes := _output_shapes(exported.reference, p)) is not None]
    reference_primary = []
    with progress.stage("reference outputs", total=len(feeds)) as stage:
        for feed in feeds:
            try:
                raw = exported.reference(feed)
            except SlimserveError:
                raise
            except Exception as exc:  # noqa: BLE001  # the user's model failing on its inputs: bad input
                raise SlimserveError(f"the original model failed on the evaluation inputs: {ort_message(exc)}",
                                     hint="pass --eval with inputs the model accepts, or check the model") from None
            reference_primary.append(_primary(encoder, exported, raw, feed))
            stage.advance()
    return Prepared(source=source, exported=exported, work_dir=work_dir, feeds=feeds, calibration=calibration,
                    reference_primary=reference_primary, eval_source=eval_source, export_seconds=export_seconds,
                    reference_seconds=time.perf_counter() - start, source_sha256=source_sha,
                    extra={"source_path": source_path},
                    cache=StepCache.for_feeds(work_dir / "step-cache", calibration), shape_probes=probes)


def _output_shapes(run: Any, feed: Feed) -> dict[str, tuple[int, ...]] | None:
    """The shapes of every output of `run` on `feed`, or None when it refuses the feed."""
    try:
        return {name: tuple(np.shape(value)) for name, value in run(feed).items()}
    except Exception:  # noqa: BLE001  # outside the graph's own constraints: not a probe
        return None


def check_input_sizes(prepared: Prepared, model_file: Path) -> None:
    """A recipe's model must run wherever the original runs: on the probes (the evaluation feed with its
    symbolic dimensions halved and doubled), with the same output shapes. Stale shape annotations from a
    quantizer's shape inference break exactly this."""
    if not prepared.shape_probes:
        return
    session = ort_session(model_file)
    names = [o.name for o in session.get_outputs()]
    for feed, want in prepared.shape_probes:
        shapes = _output_shapes(lambda f: dict(zip(names, session.run(None, dict(f)))), feed)
        if shapes != want:
            sizes = eval_shapes.describe(feed)
            got = "fails" if shapes is None else f"answers shapes {shapes} instead of {want}"
            raise ToolError(f"the optimized model {got} on inputs the original accepts ({sizes})",
                            hint="try another recipe; report the model if a plain fp32 recipe does this")


def _prepare_family(source: Source, exported: Exported, family: Family, work_dir: Path, eval_path: Path | None,
                    progress: Progress, export_seconds: float, start: float) -> Prepared:
    """Evaluation requests encoded by the shipped runtime, and the original model's outputs on them."""
    runtime = LoadedModel(exported.onnx_path.parent, threads=0, model_file=exported.onnx_path, spec=exported.runtime)
    eval_for_runtime = getattr(family, "eval_set_for_runtime", None)  # requests shaped by the model (tabular)
    evalset = (eval_for_runtime(exported.runtime, eval_path) if eval_for_runtime is not None
               else family.eval_set(runtime.task, eval_path))
    defaults = runtime.parameters(None)

    def encode(inputs: Any, what: str, index: int) -> Encoded:
        try:
            return runtime.encode_request(inputs, defaults)
        except InputError as exc:
            raise SlimserveError(f"{what} request {index + 1} cannot be served: {exc}",
                                 hint="check the --eval file against the task's request shape "
                                      "(slimserve optimize --list-tasks)") from None

    encoded = [encode(r, "evaluation", i) for i, r in enumerate(evalset.requests)]
    calibration = [encode(r, "calibration", i).feeds for i, r in enumerate(evalset.calibration)]
    reference_outputs = []
    family_reference = getattr(family, "reference_outputs", None)  # the original takes the request itself (tabular)
    with progress.stage("reference outputs", total=len(encoded)) as stage:
        for item in encoded:
            try:
                reference_outputs.append(family_reference(exported, item) if family_reference is not None
                                         else exported.reference(item.feeds))
            except Exception as exc:  # noqa: BLE001  # the user's model failing on its inputs: bad input
                raise SlimserveError(f"the original model failed on the evaluation inputs: {ort_message(exc)}",
                                     hint="pass --eval with inputs the model accepts, or check the model") from None
            stage.advance()
    source_path, source_sha = _source_digest(source)
    return Prepared(source=source, exported=exported, work_dir=work_dir, feeds=[e.feeds for e in encoded],
                    calibration=calibration, reference_primary=[], eval_source=evalset.description,
                    export_seconds=export_seconds, reference_seconds=time.perf_counter() - start,
                    source_sha256=source_sha, extra={"source_path": source_path},
                    cache=StepCache.for_feeds(work_dir / "step-cache", calibration),
                    encoded=encoded, reference_outputs=reference_outputs)


def _evaluate_family(prepared: Prepared, family: Family, model: LoadedModel, progress: Progress) -> Fidelity:
    batches = []
    with progress.stage("evaluate fidelity", total=len(prepared.encoded)) as stage:
        for item, reference in zip(prepared.encoded, prepared.reference_outputs):
            try:
                outputs = model.run(item.feeds)
            except Exception as exc:  # onnxruntime runtime failures on the candidate
                raise ToolError(f"the optimized model fails at inference: {first_line(exc)}") from exc
            batches.append(EvalBatch(encoded=item, reference=reference, candidate=outputs))
            stage.advance()
    try:
        return family.fidelity(model, batches, reference_name=prepared.exported.reference_kind,
                               eval_source=prepared.eval_source)
    except ValueError as exc:
        raise ToolError(f"the optimized model's output no longer matches the original: {exc}") from None


def _output_kind(runtime: dict[str, Any]) -> str:
    if runtime["task"] == "text-classification":
        return "logits"
    return "embedding" if runtime["kind"] == "text" else "tensor"


def evaluate(prepared: Prepared, model_file: Path, progress: Progress = NULL_PROGRESS) -> Fidelity:
    """Run a candidate file on the evaluation feeds and compare with the reference."""
    runtime = prepared.exported.runtime
    model = LoadedModel(prepared.exported.onnx_path.parent, threads=0, model_file=model_file, spec=runtime)
    family = family_for(runtime.get("task", ""))
    if family is not None:
        return _evaluate_family(prepared, family, model, progress)
    text_model = model if runtime["kind"] == "text" else None
    candidate = []
    with progress.stage("evaluate fidelity", total=len(prepared.feeds)) as stage:
        for feed in prepared.feeds:
            try:
                outputs = model.run(feed)
            except Exception as exc:  # onnxruntime runtime failures on the candidate
                raise ToolError(f"the optimized model fails at inference: {first_line(exc)}") from exc
            candidate.append(_primary(text_model, prepared.exported, outputs, feed))
            stage.advance()
    output = runtime.get("output") or ",".join(sorted(model.output_names))
    try:
        return compare_outputs(prepared.reference_primary, candidate, kind=_output_kind(runtime), output=output,
                               reference_name=prepared.exported.reference_kind, eval_source=prepared.eval_source)
    except ValueError as exc:
        raise ToolError(f"the optimized model's output no longer matches the original: {exc}") from None


def run_recipe(prepared: Prepared, recipe: str, dst: Path, progress: Progress = NULL_PROGRESS) -> tuple[list[dict[str, Any]], float]:
    """Apply each step file to file; returns per-step records and total seconds."""
    steps = parse_recipe(recipe)
    current = prepared.exported.onnx_path
    records: list[dict[str, Any]] = []
    total = 0.0
    scratch = prepared.work_dir / f"recipe-{abs(hash((recipe, str(dst))))}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for index, step in enumerate(steps):
        step_dir = scratch / f"{index}-{step.label}"
        step_dir.mkdir()
        out = step_dir / "model.onnx"
        ctx = StepContext(work_dir=step_dir / "work", calibration=prepared.calibration, progress=progress,
                          cache=prepared.cache)
        ctx.work_dir.mkdir()
        started = time.perf_counter()
        with progress.stage(f"step {step.label}"):
            try:
                result = run_step(step.spec, step.options, current, out, ctx)
            except SlimserveError:
                raise
            except Exception as exc:  # a step's library failed in a way it did not anticipate
                raise ToolError(f"step {step.label} failed on this model: {first_line(exc)}",
                                hint="try another recipe, or rerun with --debug and report it") from exc
        seconds = time.perf_counter() - started
        total += seconds
        load_onnx(result.path)  # every step must leave a parseable model behind
        records.append({"step": step.label, "options": step_options.as_dict(step.options),
                        "seconds": round(seconds, 3), "bytes": result.path.stat().st_size,
                        "notes": list(result.notes), **({"details": dict(result.details)} if result.details else {})})
        current = result.path
    # The final model pre-optimized offline, so cold starts skip the fusions (steps/graph_opt.preoptimize).
    from slimserve.optimizer.steps.graph_opt import preoptimize

    with progress.stage("offline graph optimization of the result"):
        current, load_level, notes = preoptimize(current, scratch / "final.onnx", prepared.calibration,
                                                 original=prepared.exported.onnx_path)
    records[-1]["notes"].extend(notes)
    if load_level:
        records[-1].setdefault("details", {})["load_level"] = load_level
    for path in model_files(current):
        shutil.copy2(path, dst / ("model.onnx" if path == current else path.name))
    stale = drop_inferred_value_info(dst / "model.onnx", prepared.exported.onnx_path)
    if stale and records:
        records[-1]["notes"].append(f"{stale} shape annotations from the quantizer's shape inference were not "
                                    "shipped (they can be wrong for input sizes other than the evaluation's)")
    return records, total


def drop_inferred_value_info(model_file: Path, original: Path) -> int:
    """Remove the top-level `value_info` the steps added (symbolic shape inference writes shapes that may
    hold only for the sizes it saw: a model carrying them can refuse inputs the original accepts).
    onnxruntime infers shapes itself; the original's own annotations are kept. Returns how many went."""
    import onnx

    model = load_onnx(model_file)  # graph only: external data files stay as they are
    keep = {v.name for v in load_onnx(original).graph.value_info}
    added = [v for v in model.graph.value_info if v.name not in keep]
    if not added:
        return 0
    kept = [v for v in model.graph.value_info if v.name in keep]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    onnx.save_model(model, str(model_file))
    return len(added)


def load_session(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The runtime section's `session` key: the load-time optimization level of a model pre-optimized
    offline (read by model_runtime.session_options); nothing, i.e. ORT_ENABLE_ALL, otherwise."""
    level = steps[-1].get("details", {}).get("load_level") if steps else None
    return {"session": {"graph_optimization_level": level}} if level else {}


def make_candidate(prepared: Prepared, recipe: str, out_dir: Path, progress: Progress = NULL_PROGRESS,
                   cpu: str | None = None) -> dict[str, Any]:
    """Write model.onnx, runtime files and slimserve.json into `out_dir` (a staging folder). `cpu` names the
    target CPU (optimizer/isa.py): steps that take one get it, and the manifest says where fidelity was measured."""
    from slimserve.optimizer import isa
    from slimserve.optimizer.recipes import with_target

    steps, recipe_seconds = run_recipe(prepared, with_target(recipe, cpu), out_dir, progress)
    model_path = out_dir / "model.onnx"
    ort_session(model_path)  # a candidate onnxruntime cannot load is an error, not a result
    check_input_sizes(prepared, model_path)
    started = time.perf_counter()
    fidelity = evaluate(prepared, model_path, progress)
    eval_seconds = time.perf_counter() - started
    for extra in prepared.exported.extra_files:
        shutil.copy2(extra, out_dir / extra.name)
    info = describe_model(model_path)
    data_bytes = sum((out_dir / f).stat().st_size for f in info["external_data"])
    manifest: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "source": {"kind": prepared.source.kind, "path": prepared.extra["source_path"],
                   "sha256": prepared.source_sha256, **prepared.exported.source_info},
        "recipe": recipe,
        "steps": steps,
        "versions": library_versions(),
        "model": {"path": "model.onnx", "bytes": model_path.stat().st_size + data_bytes,
                  "sha256": sha256_file(model_path), "external_data": info["external_data"],
                  "fp32_bytes": sum(p.stat().st_size for p in model_files(prepared.exported.onnx_path)),
                  "inputs": info["inputs"], "outputs": info["outputs"], "opset": info["opset"]},
        "runtime": {**prepared.exported.runtime, **load_session(steps)},
        "fidelity": fidelity.as_dict(),
        "timings": {"export_s": round(prepared.export_seconds, 3), "reference_s": round(prepared.reference_seconds, 3),
                    "recipe_s": round(recipe_seconds, 3), "eval_s": round(eval_seconds, 3)},
        "notes": [note for record in steps for note in record["notes"]],
    }
    isa_section, isa_notes = isa.record(steps, cpu)  # fidelity of integer matmuls depends on the CPU
    manifest["fidelity"]["isa"] = isa_section
    manifest["notes"] += isa_notes
    from slimserve.measure.coldstart import sample_event

    # The request the handler runs before a SnapStart snapshot, so a restored environment is warm.
    manifest["runtime"] = {**manifest["runtime"], "warmup": sample_event(manifest)["inputs"]}
    manifest["files"] = file_entries(out_dir)
    write_manifest(out_dir, manifest)
    return manifest


def optimize(source: Source, recipe: str, out: Path, work_dir: Path, eval_path: Path | None = None,
             progress: Progress = NULL_PROGRESS, cpu: str | None = None) -> dict[str, Any]:
    """Validate the recipe before the (slow) export, then prepare and build one candidate into `out`."""
    parse_recipe(recipe)
    prepared = prepare(source, work_dir, eval_path, progress)
    return make_candidate(prepared, recipe, out, progress, cpu=cpu)


def recipes_in(names: Sequence[str]) -> list[str]:
    for name in names:
        parse_recipe(name)
    return list(names)
