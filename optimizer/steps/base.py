"""The contract every recipe step follows: ONNX file in, new ONNX file out, never in place."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.progress import NULL_PROGRESS, Progress

Feed = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class StepContext:
    """What a step may use beyond its input file.

    `calibration` holds model feeds (input name -> array) drawn from the evaluation source, for steps
    that calibrate activation ranges. `work_dir` is scratch space the step may fill; it is removed after.
    """

    work_dir: Path
    calibration: Sequence[Feed] = ()
    progress: Progress = NULL_PROGRESS


@dataclass(frozen=True)
class StepResult:
    """The written model and anything a user should know about it (honest caveats go in `notes`)."""

    path: Path
    notes: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


StepRun = Callable[[Path, Path, StepContext, str | None], StepResult]


@dataclass(frozen=True)
class StepSpec:
    """A named step. `argument` is the parametrised tail of its name (`25` in `prune-ffn-25`), if any.

    `run(src, dst, ctx, argument)` must write `dst` (plus external data beside it if > 2 GB) and leave
    `src` untouched. Heavy imports belong inside `run` so `slimserve --help` stays fast.
    """

    name: str
    help: str
    run: StepRun
    takes_argument: bool = False
    argument_help: str = ""
