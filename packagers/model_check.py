"""Before anything is written: the model a deployment will serve loads in onnxruntime.

`check_model(bundle)` runs in every packager before the runtime closure is built, whatever `--no-check`
says (that flag skips measuring, not safety). It refuses, with one line and exit 2:
- what `screen_model` (optimizer/onnx_io.py, the one home of the rules for untrusted ONNX files) refuses:
  declared sizes the file does not hold (a "40 GB" initializer with 16 bytes), constant shapes that are
  allocation bombs (a ConstantOfShape onnxruntime skips folding at load, so it would only explode at the
  first request, inside the deployment), external data outside the folder;
- anything onnxruntime refuses when it creates the session the shipped handler creates (same graph
  optimisation level): custom-domain ops it has no kernel for, malformed graphs.
The load runs in a child interpreter under an address-space limit and a timeout, so a model that needs
absurd memory or time to load fails there with one line instead of taking this process down.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from slimserve.bundle import ModelBundle
from slimserve.errors import SlimserveError, first_line

LOAD_TIMEOUT_S = 300
BASE_MEMORY = 2 << 30  # address space an interpreter with onnxruntime imported needs (~1.1 GiB), with room
_HINT = "the model file is malformed or hostile; re-export it, or rerun `slimserve optimize` on its source"

_LOAD = r"""
import resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import onnxruntime as ort
opts = ort.SessionOptions()
opts.log_severity_level = 4
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # what the shipped handler uses
try:
    ort.InferenceSession(sys.argv[1], sess_options=opts, providers=["CPUExecutionProvider"])
except Exception as exc:
    sys.stderr.write(str(exc) or type(exc).__name__)
    sys.exit(3)
"""


def check_model(bundle: ModelBundle) -> None:
    """Refuse (SlimserveError, exit 2) a model that cannot be served; checked once per process per content."""
    files = sorted({bundle.model_path, *(bundle.root / rel for rel in bundle.files)})
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file())
    _check_once(bundle.model_path, stamp)


@functools.lru_cache(maxsize=64)
def _check_once(model_path: Path, stamp: tuple[tuple[str, int, int], ...]) -> None:
    """`stamp` (paths, sizes, mtimes of the bundle's files) is the cache key: an edited file is checked again."""
    from slimserve.optimizer.onnx_io import load_onnx, screen_model

    screen_model(load_onnx(model_path, with_data=False), model_path)
    _load_in_onnxruntime(model_path, BASE_MEMORY + 3 * sum(size for _, size, _ in stamp))


def _load_in_onnxruntime(model_path: Path, limit: int) -> None:
    """Create the handler's session in a child interpreter allowed at most `limit` bytes of address space
    (model and data bytes three times over: mapped, copied into the arena, pre-packed)."""
    from slimserve.optimizer.onnx_io import ort_message

    with tempfile.TemporaryDirectory(prefix="slimserve-load-") as tmp:
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", _LOAD, str(model_path.absolute()), str(limit)],
                                  capture_output=True, text=True, cwd=tmp, timeout=LOAD_TIMEOUT_S, check=False,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired:
            raise SlimserveError(f"onnxruntime did not load {model_path.name} within {LOAD_TIMEOUT_S} s",
                                 hint=_HINT) from None
    if proc.returncode == 0:
        return
    why = ort_message(RuntimeError(proc.stderr)) if proc.stderr.strip() else f"the loader died ({proc.returncode})"
    if proc.returncode < 0 or "bad_alloc" in why or "allocate" in why.lower():
        why = f"loading needs more than {limit / 2**30:.1f} GiB of memory ({first_line(why)})"
    raise SlimserveError(f"onnxruntime cannot load {model_path.name}: {why}", hint=_HINT)
