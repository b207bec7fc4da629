"""Turn pydantic validation errors into file:line: key.path problems with suggestions."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import Problem, SpecError, closest_first, did_you_mean
from .yamlio import LineMap, line_for

M = TypeVar("M", bound=BaseModel)


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


unwrap = _unwrap  # for sweep-key checks in load.py


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the last key of ``loc``."""
    current: Any = model
    for part in loc:
        found = None
        for candidate in _unwrap(current):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                if part in candidate.model_fields:
                    found = candidate.model_fields[part].annotation
                    break
            elif typing.get_origin(candidate) in (dict, list):
                found = typing.get_args(candidate)[-1]
                break
        if found is None:
            return None
        current = found
    for candidate in _unwrap(current):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def problems_from(
    exc: ValidationError,
    model: type[BaseModel],
    file: str,
    lines: LineMap,
    prefix: tuple[str, ...] = (),
) -> list[Problem]:
    """One Problem per pydantic error, with the line and valid choices where they exist
    (``prefix``: the keys above ``model`` in the file, for a group validated on its own)."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        key = ".".join(str(p) for p in prefix + loc)
        message, choices = _message(err, model, loc)
        problems.append(Problem(file, line_for(lines, key), key, message, choices))
    return problems


def _message(err: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, tuple[str, ...]]:
    """What is wrong, and the valid choices where there is a list of them."""
    kind = err["type"]
    choices: tuple[str, ...] = ()
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        names = sorted(parent.model_fields) if parent else []
        message = f"unknown key{did_you_mean(str(loc[-1]), names)}"
        choices = closest_first(str(loc[-1]), names)
    elif kind in ("literal_error", "enum"):
        listed = str(err.get("ctx", {}).get("expected", ""))
        # "'a', 'b' or 'c'" for strings; "1 or 3" for numbers (Literal[1, 3])
        expected = re.findall(r"'([^']*)'", listed) or [
            t for t in re.split(r",\s*|\s+or\s+", listed) if t
        ]
        got = err.get("input")
        message = f"{got!r} is not a valid choice{did_you_mean(str(got), expected)}"
        choices = closest_first(str(got), expected)
    elif kind == "missing":
        message = "required key is missing"
    else:
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        message = f"{err['msg']}{shown}"
    return message, choices


def validate_model(model: type[M], data: dict[str, Any], file: str, lines: LineMap) -> M:
    """Validate ``data`` against ``model``; raise SpecError listing every problem. Groups a
    model validates against another model (a site's backend options) come back in the
    ``deferred`` context and are reported at their own keys; a model's ``moved_keys`` (old
    places still read) become warnings that name file:line, the old key and the new place."""
    deferred: list[tuple[str, type[BaseModel], ValidationError]] = []
    try:
        result = model.model_validate(data, context={"deferred": deferred})
    except ValidationError as exc:
        raise SpecError(problems_from(exc, model, file, lines)) from None
    if deferred:
        problems = [p for g, m, e in deferred for p in problems_from(e, m, file, lines, (g,))]
        raise SpecError(problems)
    for old, new in getattr(result, "moved_keys", list)():
        where = f"{file}:{line_for(lines, old)}" if line_for(lines, old) else file
        result._warnings.append(  # type: ignore[attr-defined]
            f"{where}: {old} has moved to {new} (the old key still works, for now)"
        )
    return result
