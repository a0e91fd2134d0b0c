"""The one registry of recipe steps, and parsing of recipe names such as `prune-ffn-25+int8`.

Step modules are listed explicitly (no registration by import side effect); each exposes `SPEC` or
`SPECS`. Importing a step module is cheap: heavy libraries are imported inside its `run`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import lru_cache

from slimserve.errors import SlimserveError
from slimserve.optimizer.steps.base import StepSpec

STEP_MODULES = ("graph_opt", "fp16", "int8_dynamic", "int8_static", "int8_weight", "int4_weight", "int8_auto", "prune")
DEFAULT_RECIPE = "int8"


@dataclass(frozen=True)
class RecipeStep:
    spec: StepSpec
    argument: str | None

    @property
    def label(self) -> str:
        return f"{self.spec.name}-{self.argument}" if self.argument is not None else self.spec.name


@lru_cache(maxsize=1)
def registry() -> dict[str, StepSpec]:
    specs: dict[str, StepSpec] = {}
    for module_name in STEP_MODULES:
        module = importlib.import_module(f"slimserve.optimizer.steps.{module_name}")
        found = getattr(module, "SPECS", None) or (module.SPEC,)
        for spec in found:
            if spec.name in specs:
                raise RuntimeError(f"recipe step {spec.name!r} is registered twice")
            specs[spec.name] = spec
    return specs


def step_names() -> list[str]:
    """Names as a user types them (`prune-ffn-N` for steps that take a number)."""
    return [f"{s.name}-N" if s.takes_argument else s.name for s in registry().values()]


def parse_recipe(recipe: str) -> list[RecipeStep]:
    parts = [p.strip() for p in recipe.split("+")]
    if not recipe.strip() or any(not p for p in parts):
        raise SlimserveError(f"recipe {recipe!r} is empty or has an empty step", hint=f"steps: {', '.join(step_names())}")
    specs = registry()
    steps = []
    for part in parts:
        if part in specs and not specs[part].takes_argument:
            steps.append(RecipeStep(specs[part], None))
            continue
        prefix, _, argument = part.rpartition("-")
        if prefix in specs and specs[prefix].takes_argument and argument:
            steps.append(RecipeStep(specs[prefix], argument))
            continue
        close = difflib.get_close_matches(part, step_names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SlimserveError(f"unknown recipe step {part!r}", hint=f"{hint}known steps: {', '.join(step_names())}")
    return steps
