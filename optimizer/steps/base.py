"""The contract every recipe step follows: ONNX file in, new ONNX file out, never in place.

A step is data plus one function: a frozen options dataclass whose fields carry help text (`option`,
`required`), and `run(src, dst, ctx, options) -> StepResult`. The options are set from a recipe string
(`int4-weight(block=64)`, see `optimizer.recipes`), listed with their help by `--list-recipes`, and
recorded, resolved, in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from slimserve.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from slimserve.optimizer.step_cache import StepCache

Feed = Mapping[str, np.ndarray]
T = TypeVar("T")
O = TypeVar("O")


def option(default: T, help: str) -> T:
    """A step option with a default and the help text `--list-recipes` shows."""
    value: T = field(default=default, metadata={"help": help})
    return value


def required(help: str) -> Any:
    """A step option the recipe must set (`prune-ffn-25` or `prune-ffn(percent=25)`)."""
    return field(metadata={"help": help})


@dataclass(frozen=True)
class NoOptions:
    """Options of a step that has none."""


@dataclass(frozen=True)
class StepContext:
    """What a step may use beyond its input file.

    `calibration` holds model feeds (input name -> array) drawn from the evaluation source, for steps
    that calibrate activation ranges. `work_dir` is scratch space the step may fill; it is removed after.
    `cache` (when given) holds step results by content: a step that builds another step's result (`int8`
    builds int8-weight and int8-dynamic) takes it from there instead of building it again.
    """

    work_dir: Path
    calibration: Sequence[Feed] = ()
    progress: Progress = NULL_PROGRESS
    cache: StepCache | None = None


@dataclass(frozen=True)
class StepResult:
    """The written model and anything a user should know about it (honest caveats go in `notes`)."""

    path: Path
    notes: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepSpec(Generic[O]):
    """A named step: `run(src, dst, ctx, options)` with `options` an instance of the `options` dataclass.

    `run` must write `dst` (plus external data beside it if > 2 GB) and leave `src` untouched. Heavy
    imports belong inside `run` so `slimserve --help` stays fast. `argument` names the option that the
    numeric tail of the step's name sets (`percent` for `prune-ffn-25`), if any.
    """

    name: str
    help: str
    run: Callable[[Path, Path, StepContext, O], StepResult]
    options: type[O]
    argument: str | None = None

    @property
    def takes_argument(self) -> bool:
        """True when the step needs its numeric tail (`prune-ffn-N`): it has no complete default."""
        return self.argument is not None
