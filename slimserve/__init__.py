"""slimserve: make ML models fit serverless platforms.

The public API (see README, "Python API") is importable from here: `slimserve.optimize(...)` and friends,
and the exceptions they raise. The functions load lazily (PEP 562), so `import slimserve` and
`slimserve --help` stay fast: onnx, onnxruntime and torch are imported only when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimserve.errors import LimitExceeded, SlimserveError, ToolError

__version__ = "0.1.0"

_API = ("Candidate", "Fidelity", "optimize")

if TYPE_CHECKING:
    from slimserve.api import Candidate, Fidelity, optimize

__all__ = ["Candidate", "Fidelity", "LimitExceeded", "SlimserveError", "ToolError", "__version__", "optimize"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from slimserve import api

        return getattr(api, name)
    raise AttributeError(f"module 'slimserve' has no attribute {name!r}")
