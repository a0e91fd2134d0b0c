"""Step results kept by content, so a result is built once per prepared model.

The key is (sha256 of the input model and its external data, the step's name, its resolved options, a
digest of the calibration feeds): a step is a pure function of those. `compare` builds `int8-weight`,
`int8-dynamic` and `int8` from one export; `int8` builds the other two to choose between them, and with
the cache it takes them from there (and they from it). The cache lives in the prepared work folder and
goes with it.

Entries are written to a temporary folder and renamed into place, so a reader never sees half an entry;
two threads building the same entry at once both succeed and one rename wins. Files are hard-linked
where the file system allows (steps never write a file in place), so the cache costs little disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimserve.optimizer import step_options
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec

_RESULT = "result.json"


def file_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def feeds_digest(feeds: Sequence[Feed]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            value = feed[name]
            digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class StepCache:
    """A folder of step results by key; `calibration` is the digest of the feeds steps calibrate on."""

    root: Path
    calibration: str

    @classmethod
    def for_feeds(cls, root: Path, feeds: Sequence[Feed]) -> StepCache:
        return cls(Path(root), feeds_digest(feeds))

    def key(self, spec: StepSpec[Any], options: Any, src: Path) -> str:
        from slimserve.optimizer.onnx_io import model_files

        payload = json.dumps({"input": file_digest(model_files(src)), "step": spec.name,
                              "options": step_options.as_dict(options), "calibration": self.calibration},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def get(self, key: str, dst: Path) -> StepResult | None:
        """Copy a stored result to `dst` (its external data beside it); None when there is none."""
        entry = self.root / key
        meta = entry / _RESULT
        if not meta.is_file():
            return None
        record = json.loads(meta.read_text(encoding="utf-8"))
        dst = Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        for name in record["files"]:
            _link_or_copy(entry / name, dst if name == record["model"] else dst.parent / name)
        return StepResult(path=dst, notes=tuple(record["notes"]), details=record["details"])

    def put(self, key: str, result: StepResult) -> None:
        from slimserve.optimizer.onnx_io import model_files

        self.root.mkdir(parents=True, exist_ok=True)
        files = model_files(result.path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            for path in files:
                _link_or_copy(path, tmp / path.name)
            record = {"model": result.path.name, "files": [p.name for p in files], "notes": list(result.notes),
                      "details": dict(result.details)}
            (tmp / _RESULT).write_text(json.dumps(record), encoding="utf-8")
            os.rename(tmp, self.root / key)
        except OSError:  # another thread stored the same entry first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy is as good
        shutil.copyfile(src, dst)


def run_step(spec: StepSpec[Any], options: Any, src: Path, dst: Path, ctx: StepContext) -> StepResult:
    """`spec.run`, through `ctx.cache` when there is one (the sub-steps see the same cache)."""
    if ctx.cache is None:
        return spec.run(src, dst, ctx, options)
    key = ctx.cache.key(spec, options, src)
    found = ctx.cache.get(key, dst)
    if found is not None:
        return found
    result = spec.run(src, dst, ctx, options)
    ctx.cache.put(key, replace(result, path=Path(result.path)))
    return result
