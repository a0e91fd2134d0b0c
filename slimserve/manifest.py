"""`slimserve.json`: the manifest that travels with every artifact (source, recipe, versions, measurements).

One typed model, `Manifest`, is the only way a manifest enters or leaves the program: `write_manifest`
validates what it is given (the optimizer still builds a plain dict; it goes through the same model) and
`read_manifest` validates what it reads, refusing a manifest from a newer schema in one line.

    schema      int      manifest schema (SCHEMA_VERSION); newer ones are refused, older ones read
    source      kind, path (a basename once shipped), sha256, + the exporter's details
    recipe      the recipe string;  steps: one record per step (step, seconds, bytes, notes, options...)
    versions    library -> version
    model       path, bytes, sha256, external_data, fp32_bytes, inputs/outputs (name, dtype, shape), opset,
                deployed (the files shipped for it when packaging moved its weights to external data)
    runtime     kind, task + what the family's handler needs (the shipped runtime reads it as plain JSON);
                session.graph_optimization_level (basic|extended|all): the load-time level of a model
                pre-optimized offline (steps/graph_opt.preoptimize); absent = all
    fidelity    metric, mean, min, samples, ... ;  timings, notes, files (path, bytes, sha256)
    handler     the handler an artifact runs (packages only)
    package     one section for every target (packages only): target, platform, python, arch, artifacts,
                then the target's own: Lambda's runtime/memory/timeout/closure/checks, an image's
                engine/base/image/push

Sections other stages may extend (`_Open`) keep unknown keys as written, so a runtime key added for a new
family survives a round trip; the `package` section is slimserve's own and closed (`_Closed`). Stages add
sections; none rewrites another's. CI can diff two builds by their manifests.

This module is the shared kernel's: it imports nothing from optimizer/, profiles/ or packagers/.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimserve import __version__
from slimserve.errors import SlimserveError

MANIFEST_NAME = "slimserve.json"
# 1: the first schema. 2: every package target writes one `package` section (a Lambda package wrote
# top-level `target`, `artifacts`, `closure` and `checks`); an optimize output has the same shape in both.
SCHEMA_VERSION = 2

TRACKED_LIBRARIES = ("onnx", "onnxruntime", "numpy", "tokenizers", "torch", "transformers", "optimum",
                     "optimum-onnx", "sentence-transformers")

Number = int | float  # int first: a JSON integer stays an integer on the way back out
Measured = int | float | str | None


class _Open(BaseModel):
    """A section other stages may extend: unknown keys are kept, and written back, as they were."""

    model_config = ConfigDict(extra="allow", frozen=True, ser_json_inf_nan="constants")

    def to_dict(self) -> dict[str, Any]:
        """The section as JSON would hold it: the keys that were given, in order, extras after."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class _Closed(_Open):
    """A section slimserve alone writes: an unknown key is an error, not a silently kept typo."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class FileEntry(_Open):
    path: str
    bytes: int | None = None
    sha256: str | None = None


class TensorSpec(_Open):
    name: str
    dtype: str = "unknown"
    shape: list[int | str | None] = []


class Source(_Open):
    kind: str
    path: str | None = None
    sha256: str | None = None


class StepRecord(_Open):
    step: str
    seconds: Number | None = None
    bytes: int | None = None
    notes: list[str] = []
    options: dict[str, Any] = {}  # the step's resolved options (optimizer/step_options.py)
    details: dict[str, Any] = {}  # what the step reports of itself (e.g. int8's candidate scores)


class DeployedModel(_Open):
    layout: str
    files: list[FileEntry]


class ModelSection(_Open):
    path: str
    bytes: int | None = None
    sha256: str | None = None
    external_data: list[str] = []
    fp32_bytes: int | None = None
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    opset: int | None = None
    deployed: DeployedModel | None = None


class RuntimeSection(_Open):
    """What the shipped handler needs; `kind` and `task` always, the rest per family (tokenizer, pooling,
    limits...). The handler reads it as plain JSON: `spec()` is exactly that."""

    kind: str
    task: str

    def spec(self) -> dict[str, Any]:
        return self.to_dict()


class FidelitySection(_Open):
    metric: str | None = None
    mean: Number | None = None
    min: Number | None = None
    samples: int | None = None


# -- the package section ---------------------------------------------------------------------------------
class Artifact(_Closed):
    """One file of the package: its name in OUT, size (and unzipped size for a zip), sha256."""

    path: str
    bytes: int
    sha256: str
    unzipped_bytes: int | None = None


class Closure(_Open):
    """The runtime closure the package ships: pinned requirements, the wheels, how bytecode was compiled."""

    pins: list[str]
    wheels: list[str]
    bytecode: str
    sources: bool
    numpy: str = "pypi"  # "no-blas": numpy built without OpenBLAS for the target (packagers/numpy_noblas.py)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Closure:
        """From what `build_closure` recorded beside the closure (closures built before `numpy` say pypi)."""
        return cls(pins=info["pins"], wheels=info["wheels"], bytecode=info["bytecode"], sources=info["sources"],
                   numpy=info.get("numpy", "pypi"))


class FindingRecord(_Open):
    id: str
    name: str
    status: Literal["pass", "warn", "fail"]
    measured: Measured = None
    limit: Measured = None
    unit: str = ""
    reason: str = ""


class CheckRecord(_Open):
    """The check the package was built under: the platform's verdict and the measurements it judged."""

    platform: str
    fits: bool
    checks: list[FindingRecord] = []
    recommended_memory_mb: int | None = None
    memory_mb: int | None = None
    recommended_timeout_s: int | None = None
    package: dict[str, Any] = {}
    cold_start: dict[str, Any] = {}
    peak_rss_mb: Number | None = None


class BaseImage(_Closed):
    ref: str
    manifest_digest: str | None = None
    index_digest: str | None = None
    layers: int


class ImageLayer(_Closed):
    role: str
    digest: str
    diff_id: str
    media_type: str
    bytes: int
    uncompressed_bytes: int | None = None


class ImageFacts(_Closed):
    digest: str
    media_type: str
    config_digest: str
    platform: str
    layout: str
    compressed_bytes: int
    uncompressed_bytes: int
    new_layers_bytes: int
    new_layers_uncompressed_bytes: int
    layers: list[ImageLayer]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    working_dir: str | None = None


class PushRecord(_Closed):
    ref: str
    digest: str
    uploaded: int
    mounted: int
    skipped: int


class PackageSection(_Closed):
    """What packaging made, the same section for every target; the fields after `artifacts` are the
    target's own (None / absent for the others)."""

    target: Literal["lambda", "container", "azure-functions"]
    platform: str
    python: str
    arch: str
    artifacts: list[Artifact]
    model_dir: str | None = None  # where the model folder is inside the artifact
    # Lambda (.zip)
    runtime: str | None = None  # the managed runtime, python3.12
    memory_mb: int | None = None
    timeout_s: int | None = None
    closure: Closure | None = None
    checks: CheckRecord | None = None
    # container image
    engine: str | None = None
    base: BaseImage | None = None
    image: ImageFacts | None = None
    push: PushRecord | None = None


class Manifest(_Open):
    """A whole `slimserve.json`. `model` and `runtime` are always there; the rest as the stages wrote them."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, ser_json_inf_nan="constants")

    schema_version: int | None = Field(default=None, alias="schema")
    source: Source | None = None
    recipe: str | None = None
    steps: list[StepRecord] = []
    versions: dict[str, str] = {}
    model: ModelSection
    runtime: RuntimeSection
    fidelity: FidelitySection | None = None
    timings: dict[str, Number] = {}
    notes: list[str] = []
    files: list[FileEntry] = []
    handler: str | None = None
    package: PackageSection | None = None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def packaged(self, package: PackageSection, handler: str | None = None) -> Manifest:
        """This (model's) manifest with what packaging added, stamped with the schema it now follows."""
        update: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "package": package}
        if handler is not None:
            update["handler"] = handler
        return self.model_copy(update=update)


def parse_manifest(data: Any, origin: str = MANIFEST_NAME) -> Manifest:
    """A manifest from its JSON value: a newer schema, a missing section or a wrong type is one line."""
    if isinstance(data, Manifest):
        return data
    if not isinstance(data, Mapping) or "model" not in data or "runtime" not in data:
        raise SlimserveError(f"{origin} is not a slimserve manifest (no 'model'/'runtime' sections)")
    schema = data.get("schema")
    if schema is not None and (not isinstance(schema, int) or isinstance(schema, bool) or schema < 1):
        raise SlimserveError(f"{origin}: schema {schema!r} is not a manifest schema version")
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise SlimserveError(f"{origin} was written by a newer slimserve (manifest schema {schema}; "
                             f"this slimserve {__version__} reads up to {SCHEMA_VERSION})",
                             hint="upgrade slimserve (pip install -U slimserve), or rebuild the folder with this one")
    try:
        return Manifest.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        raise SlimserveError(f"{origin}: {where}: {err['msg']}",
                             hint="rerun `slimserve optimize` to rewrite the folder") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(paths: Iterable[Path], root: Path) -> str:
    """One digest for a set of files, stable across machines: relative names and contents, sorted."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the result (absent ones are left out)."""
    versions = {"slimserve": __version__, "python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def file_entries(root: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        entries.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return entries


def write_manifest(folder: Path, manifest: Manifest | Mapping[str, Any]) -> Path:
    """Write `folder/slimserve.json`; a plain dict is validated through `Manifest` first."""
    model = parse_manifest(manifest, origin=f"the manifest for {folder}")
    path = folder / MANIFEST_NAME
    path.write_text(model.to_json(), encoding="utf-8")
    return path


def read_manifest(folder: Path) -> Manifest:
    """The manifest of an optimize (or package) output folder, with a clear error when it is not one."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise SlimserveError(
            f"{folder} has no {MANIFEST_NAME}: it is not a slimserve output folder",
            hint="run `slimserve optimize MODEL -o OUT` first and pass OUT",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlimserveError(f"{path} is not readable JSON: {exc}") from None
    return parse_manifest(data, origin=str(path))
