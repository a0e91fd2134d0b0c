"""slimserve: make ML models fit serverless platforms.

The public API (README, "Python API"): `optimize`, `check`, `package`, `compare`, `build`, the values they
return, and the exceptions they raise. The functions load lazily (PEP 562), so `import slimserve` and
`slimserve --help` stay fast: onnx, onnxruntime and torch are imported only when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimserve.errors import LimitExceeded, SlimserveError, ToolError

__version__ = "0.1.0"

_API = ("Candidate", "Fidelity", "Package", "build", "check", "compare", "optimize", "package")

if TYPE_CHECKING:
    from slimserve.api import Candidate, Fidelity, Package, build, check, compare, optimize, package
    from slimserve.pipeline.build import BuildFailed

__all__ = ["BuildFailed", "Candidate", "Fidelity", "LimitExceeded", "Package", "SlimserveError", "ToolError",
           "__version__", "build", "check", "compare", "optimize", "package"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from slimserve import api

        return getattr(api, name)
    if name == "BuildFailed":
        from slimserve.pipeline.build import BuildFailed

        return BuildFailed
    raise AttributeError(f"module 'slimserve' has no attribute {name!r}")
