"""Files shipped inside deployable artifacts. They import only numpy, onnxruntime and tokenizers.

`model_runtime.py` is also used by slimserve itself to evaluate ONNX candidates, so the numbers
slimserve reports come from the same pre- and post-processing code that runs in production.
"""

from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent
