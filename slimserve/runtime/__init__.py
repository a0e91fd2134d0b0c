"""Files shipped inside deployable artifacts. They import only numpy, onnxruntime and tokenizers.

`model_runtime.py` is also used by slimserve itself to evaluate ONNX candidates, so the numbers
slimserve reports come from the same pre- and post-processing code that runs in production.
"""

from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent


def task_modules() -> tuple[str, ...]:
    """The shipped per-task modules (`task_*.py`): every artifact carries all of them (a few kB), and
    `model_runtime.task_module` imports only the one its model's task needs."""
    return tuple(sorted(p.name for p in RUNTIME_DIR.glob("task_*.py")))


def handler_modules(*fronts: str) -> tuple[str, ...]:
    """The runtime files an artifact ships: its fronts (lambda_handler.py, http_app.py), the model runtime,
    the OpenAI chat translation the fronts route to, and every task module."""
    return (*fronts, "model_runtime.py", "chat_completions.py", *task_modules())
