"""The shipped handler modules, each with its bytecode, so a cold start does not compile them.

Lambda's /var/task, a Lambda container image and an Azure package mount are read-only where the handler
runs: Python cannot cache the bytecode it compiles, so every cold start compiled lambda_handler.py,
model_runtime.py, the task module and the chat translation from source again (about 5-7 ms of CPU in a
~200 ms MiniLM cold start, `benchmarks/coldstart_levers.py`). The artifacts now carry
`__pycache__/<module>.<cache tag>.pyc` beside each source, compiled by the target's own interpreter.

Checked-hash bytecode (PEP 552): at import the interpreter hashes the source (microseconds) and compiles
again if it differs, so a function edited in a console still runs the edit; no timestamps are stored, so
the zip stays byte-for-byte reproducible. Without the target interpreter on the build machine the sources
ship alone, as before (Python compiles them at each start; nothing is wrong, only slower).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from slimserve.errors import SlimserveError
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.target import Target
from slimserve.runtime import RUNTIME_DIR


def handler_entries(names: Sequence[str], target: Target | None, prefix: str,
                    renames: dict[str, str] | None = None) -> dict[str, Path | bytes]:
    """arcname -> source for the runtime files `names` (from slimserve/runtime) and, when `target`'s
    interpreter is here, their bytecode under `__pycache__/`. `prefix` is the folder they run from (the
    file name tracebacks show). `renames` maps a shipped name to its name in the artifact
    (azure_function_app.py -> function_app.py)."""
    renames = renames or {}
    sources: dict[str, Path] = {}
    for name in names:
        src = RUNTIME_DIR / name
        if not src.is_file():
            raise SlimserveError(f"the shipped runtime file {name} is missing from {RUNTIME_DIR}",
                                 hint="reinstall slimserve")
        sources[renames.get(name, name)] = src
    entries: dict[str, Path | bytes] = dict(sources)
    python = find_python(target.python) if target is not None else None
    if python is not None:
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources.values())).hexdigest()
        entries.update(_bytecode(str(python), tuple((arc, str(p)) for arc, p in sources.items()), prefix, digest))
    return entries


@functools.lru_cache(maxsize=16)
def _bytecode(python: str, sources: tuple[tuple[str, str], ...], prefix: str, digest: str) -> dict[str, bytes]:
    """`__pycache__/<name>` -> bytes, compiled by `python` (`digest` keys the cache on the sources' content)."""
    del digest
    with tempfile.TemporaryDirectory(prefix="slimserve-pyc-") as tmp:
        for arcname, src in sources:
            shutil.copyfile(src, Path(tmp) / arcname)
        proc = subprocess.run([python, "-I", "-S", "-m", "compileall", "-q", "-l", "-d", prefix,
                               "--invalidation-mode", "checked-hash", tmp],
                              capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:  # the shipped runtime must compile: a failure here is a broken install
            raise SlimserveError(f"compiling the handler with {python} failed: {(proc.stdout + proc.stderr).strip()[-300:]}",
                                 hint="the target interpreter must import the shipped runtime; reinstall slimserve")
        cache = Path(tmp) / "__pycache__"
        return {f"__pycache__/{pyc.name}": pyc.read_bytes() for pyc in sorted(cache.glob("*.pyc"))}
