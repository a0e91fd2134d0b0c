"""Find and parse platform profiles: shipped ones by name, the user's by path (`--profile FILE`).

Every way a profile can be wrong (not TOML, a missing table, a typo in a key, a unit that does not fit)
becomes one `SlimserveError` line naming the file and the key, with a "did you mean …" where one fits.
"""

from __future__ import annotations

import difflib
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from slimserve.errors import SlimserveError
from slimserve.profiles.schema import Profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  # Python 3.10 needs the tomli backport (same API)
    import tomli as tomllib

ALL = "all"


def _shipped_dir() -> Path:
    return Path(str(resources.files("slimserve.profiles")))


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.stem for p in _shipped_dir().glob("*.toml"))


def packaged_platforms(artifact: str | None = None) -> list[str]:
    """Shipped profiles slimserve can package for (they declare a [packager]), of one `artifact` if given."""
    found = []
    for name in list_profiles():
        packager = load_profile(name).packager
        if packager is not None and artifact in (None, packager.artifact):
            found.append(name)
    return found


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (`aws-lambda-zip`) or a user's profile file by path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file() or "/" in text or "\\" in text:
        return load_profile_file(path)
    names = list_profiles()
    if text not in names:
        close = difflib.get_close_matches(text, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SlimserveError(f"unknown platform {text!r}",
                             hint=f"{hint}choose one of: {', '.join(names)} (or `all`, or --profile FILE)")
    return load_profile_file(_shipped_dir() / f"{text}.toml")


def load_profile_file(path: Path) -> Profile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SlimserveError(f"profile file {path} does not exist") from None
    except OSError as exc:
        raise SlimserveError(f"cannot read profile file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SlimserveError(f"profile {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SlimserveError(f"profile {path} is not valid TOML: {exc}") from None
    return parse_profile(data, origin=str(path))


def parse_profile(data: dict[str, Any], origin: str = "<profile>") -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise SlimserveError(f"profile {origin}: {_first_problem(exc)}",
                             hint="compare with a shipped profile: `slimserve profiles show aws-lambda-zip`") from None


def _first_problem(exc: ValidationError) -> str:
    """One line for the first error pydantic found: where, what, and a suggestion for typos."""
    errors = exc.errors(include_url=False)
    # A typo shows up twice (the misspelt key is unknown, the real one missing): report the typo.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in err["loc"]]
    where = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(Profile, err["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        suggestion = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
        return f"unknown key {where!r}{suggestion}"
    if kind == "missing":
        return f"missing required key {where!r}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at `loc`, for typo suggestions."""
    current: Any = model
    skip_key = False
    for part in loc:
        if isinstance(part, int) or skip_key:  # a list index, or the free key of a dict[str, Model]
            skip_key = False
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        skip_key = getattr(field.annotation, "__origin__", None) is dict
        current = _model_in(field.annotation)
    return sorted(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside `X | None` or `tuple[X, ...]` (or None)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
