"""The one registry of recipe steps, and parsing of recipe strings such as `prune-ffn-25+int4-weight(block=64)`.

Grammar (whitespace around tokens is ignored):

    recipe  := step ("+" step)*
    step    := NAME ["-" N] ["(" [option ("," option)*] ")"]
    option  := KEY "=" VALUE          KEY: an option name (`accuracy_level` or `accuracy-level`)
                                      VALUE: 32 | 0.5 | true | false | none | a choice | A|B (a list)

`NAME-N` sets the step's numeric argument (`prune-ffn-25` is `prune-ffn(percent=25)`). Unknown steps,
options and choices are refused with a "did you mean". The registry is one explicit list of specs;
registering a name twice raises. Step modules are cheap to import (heavy libraries load inside `run`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError
from slimserve.optimizer import step_options
from slimserve.optimizer.steps.base import StepContext, StepResult, StepSpec

DEFAULT_RECIPE = "int8"


@dataclass(frozen=True)
class RecipeStep:
    """One step of a recipe with its resolved options."""

    spec: StepSpec[Any]
    options: Any

    @property
    def label(self) -> str:
        """The step as a recipe string writes it, shortest form: `int8`, `prune-ffn-25`, `int4-weight(block=64)`."""
        return step_label(self.spec, self.options)

    def run(self, src: Path, dst: Path, ctx: StepContext) -> StepResult:
        return self.spec.run(src, dst, ctx, self.options)


def step_label(spec: StepSpec[Any], options: Any) -> str:
    changed = step_options.changed(options)
    if not changed:
        return spec.name
    if spec.argument is not None and list(changed) == [spec.argument]:
        return f"{spec.name}-{step_options.format_value(changed[spec.argument])}"
    inner = ",".join(f"{k}={step_options.format_value(v)}" for k, v in changed.items())
    return f"{spec.name}({inner})"


def make_registry(specs: Iterable[StepSpec[Any]]) -> dict[str, StepSpec[Any]]:
    """Name -> spec; a name registered twice is a bug and raises."""
    registry: dict[str, StepSpec[Any]] = {}
    for spec in specs:
        if spec.name in registry:
            raise ValueError(f"recipe step {spec.name!r} is registered twice")
        registry[spec.name] = spec
    return registry


@lru_cache(maxsize=1)
def registry() -> dict[str, StepSpec[Any]]:
    """Every recipe step, in the order `--list-recipes` shows them."""
    from slimserve.optimizer.steps import (
        fp16,
        graph_opt,
        int4_weight,
        int8_auto,
        int8_dynamic,
        int8_static,
        int8_weight,
        prune,
    )

    return make_registry([graph_opt.SPEC, fp16.SPEC, int8_dynamic.SPEC, int8_static.SPEC, int8_weight.SPEC,
                          int8_weight.RESIDENT_SPEC, int4_weight.SPEC, int8_auto.SPEC, *prune.SPECS])


def step_names() -> list[str]:
    """Names as a user types them (`prune-ffn-N` for steps that take a number)."""
    return [f"{s.name}-N" if s.takes_argument else s.name for s in registry().values()]


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _unknown(part: str) -> SlimserveError:
    close = difflib.get_close_matches(part, step_names() + list(registry()), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SlimserveError(f"unknown recipe step {part!r}", hint=f"{hint}known steps: {', '.join(step_names())} "
                                                                 "(slimserve optimize --list-recipes)")


def parse_step(part: str) -> RecipeStep:
    """One step of a recipe string, options resolved and validated."""
    part = part.strip()
    head, given = part, dict[str, str]()
    if "(" in part or ")" in part:
        head, _, rest = part.partition("(")
        if not rest.endswith(")") or rest.count("(") or rest[:-1].count(")"):
            raise SlimserveError(f"recipe step {part!r}: options go in one pair of parentheses",
                                 hint="write e.g. int4-weight(block=64,symmetric=true)")
        for item in (i for i in rest[:-1].split(",") if i.strip()):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise SlimserveError(f"recipe step {part!r}: option {item.strip()!r} is not key=value",
                                     hint="write e.g. int4-weight(block=64)")
            if key.strip().replace("-", "_") in {k.replace("-", "_") for k in given}:
                raise SlimserveError(f"recipe step {part!r}: option {key.strip()!r} is given twice")
            given[key.strip()] = value
    head = head.strip()
    specs = registry()
    spec = specs.get(head)
    if spec is None:
        prefix, _, argument = head.rpartition("-")
        spec = specs.get(prefix)
        if spec is None or spec.argument is None or not argument:
            raise _unknown(head)
        if spec.argument in {k.strip().replace("-", "_") for k in given}:
            raise SlimserveError(f"recipe step {part!r} sets {spec.argument} twice")
        given = {spec.argument: argument, **given}
    hint = f"write e.g. {spec.name}-25" if spec.argument else ""
    return RecipeStep(spec, step_options.build(spec.name, spec.options, given, hint=hint))


def split_recipe_list(text: str) -> list[str]:
    """Recipes from a comma-separated list (`compare --recipes`), commas inside options kept:
    `int8,int4-weight(block=64,keep_int8=4)` is two recipes."""
    return [r.strip() for r in _split(text, ",") if r.strip()]


def parse_recipe(recipe: str) -> list[RecipeStep]:
    parts = [p.strip() for p in _split(recipe, "+")]
    if not recipe.strip() or any(not p for p in parts):
        raise SlimserveError(f"recipe {recipe!r} is empty or has an empty step", hint=f"steps: {', '.join(step_names())}")
    return [parse_step(p) for p in parts]


def with_target(recipe: str, cpu: str | None) -> str:
    """`recipe` with `cpu=CPU` on every step that takes a target CPU and does not name one itself
    (`optimize --cpu` -> `int8(cpu=x86-64-avx512-vnni)`); other steps and options are left as written."""
    if cpu is None:
        return recipe
    from slimserve.optimizer import isa

    isa.resolve(cpu)
    labels = []
    for step in parse_recipe(recipe):
        names = {f.name for f in step_options.fields_of(step.spec.options)}
        if "cpu" in names and getattr(step.options, "cpu", None) is None:
            step = RecipeStep(step.spec, dataclasses.replace(step.options, cpu=cpu))
        labels.append(step.label)
    return "+".join(labels)


def describe_steps() -> str:
    """The `--list-recipes` text: each step with its help, then its options with theirs."""
    lines = []
    for spec in registry().values():
        name = f"{spec.name}-N" if spec.takes_argument else spec.name
        lines.append(f"{name:<18} {spec.help}")
        for f in step_options.fields_of(spec.options):
            tail = f" (the N of {spec.name}-N)" if f.name == spec.argument else ""
            lines.append(f"{'':<20}{f.describe()}: {f.help}{tail}")
    lines += ["", "Steps join with '+'; options go in parentheses: prune-ffn-25+int4-weight(block=64,keep_int8=4)."]
    return "\n".join(lines)
