"""A step's options as data: their fields, kinds and help, values parsed from text, and back to text.

The options of a step are a frozen dataclass (see `steps.base.option`). This module reads its fields
(name, kind, default, help) and builds an instance from the `key=value` texts of a recipe string, with a
"did you mean" for a misspelt key or choice. A dataclass may refuse a combination in `__post_init__` by
raising ValueError; that becomes a SlimserveError naming the step.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from slimserve.errors import SlimserveError


@dataclass(frozen=True)
class OptionField:
    """One option of a step: its name, the kind of value it takes, its default and its help text."""

    name: str
    kind: Any  # the resolved annotation
    default: Any  # dataclasses.MISSING when the recipe must set it
    help: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(str(c) for c in _literal(self.kind))

    def describe(self) -> str:
        """`block=32 (int)`-like summary for listings."""
        kind = "|".join(self.choices) if self.choices else _kind_name(self.kind)
        default = "required" if self.required else f"default {format_value(self.default)}"
        return f"{self.name}: {kind}, {default}"


def fields_of(options: type[Any]) -> list[OptionField]:
    hints = get_type_hints(options)
    out = []
    for f in dataclasses.fields(options):
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(OptionField(f.name, hints[f.name], default, str(f.metadata.get("help", ""))))
    return out


def _literal(kind: Any) -> tuple[Any, ...]:
    if get_origin(kind) is Literal:
        return get_args(kind)
    return ()


def _optional(kind: Any) -> tuple[bool, Any]:
    """(accepts None, the other type) for `X | None`."""
    if get_origin(kind) in (Union, types.UnionType):
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(get_args(kind)) == 2:
            return True, args[0]
    return False, kind


def _kind_name(kind: Any) -> str:
    none, inner = _optional(kind)
    if none:
        return f"{_kind_name(inner)} or none"
    if get_origin(kind) is tuple:
        return "names joined by |"
    if _literal(kind):
        return "|".join(str(c) for c in _literal(kind))
    return getattr(kind, "__name__", str(kind))


def format_value(value: Any) -> str:
    """A value as a recipe string writes it (`true`, `none`, `MatMul|Gemm`, `0.5`)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "|".join(str(v) for v in value)
    return str(value)


def parse_value(step: str, option: OptionField, text: str) -> Any:
    """`text` as a value of `option`'s kind; SlimserveError saying what the option takes otherwise."""
    text = text.strip()
    where = f"{step}: option {option.name}={text!r}"
    none, kind = _optional(option.kind)
    if none and text.lower() == "none":
        return None
    choices = _literal(kind)
    if choices:
        if text in [str(c) for c in choices]:
            return next(c for c in choices if str(c) == text)
        close = difflib.get_close_matches(text, [str(c) for c in choices], n=1)
        hint = (f"did you mean {close[0]!r}? " if close else "") + f"{option.name} takes one of {', '.join(map(str, choices))}"
        raise SlimserveError(f"{where} is not a choice", hint=hint)
    if kind is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise SlimserveError(f"{where} is not true or false", hint=f"write {option.name}=true or {option.name}=false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SlimserveError(f"{where} is not a whole number", hint=f"write e.g. {option.name}=32") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise SlimserveError(f"{where} is not a number", hint=f"write e.g. {option.name}=0.5") from None
    if get_origin(kind) is tuple:
        return tuple(p.strip() for p in text.split("|") if p.strip())
    if kind is str:
        return text
    raise SlimserveError(f"{where}: this option cannot be set from a recipe")  # pragma: no cover


def build(step: str, options: type[Any], given: Mapping[str, str], *, hint: str = "") -> Any:
    """An instance of `options` from `key=value` texts (keys may use - for _); every problem is a
    SlimserveError with a suggestion."""
    known = {f.name: f for f in fields_of(options)}
    values: dict[str, Any] = {}
    for key, text in given.items():
        name = key.strip().replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            listed = ", ".join(known) or "none"
            raise SlimserveError(f"{step}: unknown option {key.strip()!r}",
                                 hint=(f"did you mean {close[0]!r}? " if close else "") + f"{step} options: {listed}")
        values[name] = parse_value(step, known[name], text)
    missing = [f.name for f in known.values() if f.required and f.name not in values]
    if missing:
        raise SlimserveError(f"{step} needs {', '.join(missing)}", hint=hint or f"write e.g. {step}({missing[0]}=...)")
    try:
        return options(**values)
    except ValueError as exc:
        raise SlimserveError(f"{step}: {exc}", hint=hint or None) from None


def as_dict(options: Any) -> dict[str, Any]:
    """The resolved options as JSON values (tuples become lists), in field order."""
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def changed(options: Any) -> dict[str, Any]:
    """The options whose value differs from the default (required ones always), in field order."""
    out = {}
    for f in fields_of(type(options)):
        value = getattr(options, f.name)
        if f.required or value != f.default:
            out[f.name] = value
    return out

