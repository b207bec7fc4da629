"""The reference pages of the documentation, generated from the code.

Every spec key (``xvhpc/spec/schema.py``), every site-config key (``xvhpc/spec/site.py``) and
every CLI verb and flag (``xvhpc/cli.py``'s argparse parser) with its type, default, valid values
and description. Generated, not written, so that the reference cannot drift from what
``xvhpc validate`` accepts. Descriptions come from ``Field(description=...)``, else from the
comments on and directly above the field in the source, else from the nested model's docstring.

Two uses:

* an MkDocs hook (``mkdocs.yml``: ``hooks: [scripts/gen_docs.py]``): the pages are added to the
  build in memory (``on_files``), nothing is written into ``docs/``;
* ``python scripts/gen_docs.py OUT_DIR``: write them as files (to read or diff them).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the hook runs from mkdocs, not from the repository root
    sys.path.insert(0, str(REPO))

CONSTRAINTS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥"}
CONSTRAINTS |= {"max_length": "length ≤", "pattern": "matches"}


def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the comments on its lines and the comment lines directly above it: the
    schema documents its keys in comments, and this reads them where they are."""
    source = textwrap.dedent(inspect.getsource(model))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    body = typing.cast(ast.ClassDef, ast.parse(source).body[0]).body
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 1
        while row >= 1 and lines[row - 1].strip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        end = node.end_lineno or node.lineno
        on = [comments[r] for r in range(node.lineno, end + 1) if r in comments]
        found[node.target.id] = " ".join(above + on)
    return found


def _type_name(annotation: Any) -> str:
    """A reader's name for a type: ``int | none``, ``list of string``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping {_type_name(args[0])} → {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _valid(field: FieldInfo) -> str:
    """Constraints pydantic enforces (bounds, patterns) and the site checkers' own messages."""
    parts = []
    for meta in field.metadata:
        for attr, word in CONSTRAINTS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{word} `{value}`")
        func = getattr(meta, "func", None)
        if func is not None and func.__closure__:
            what = inspect.getclosurevars(func).nonlocals.get("what")
            parts.append(what or "one line, no control characters")
    annotation = field.annotation
    for arg in typing.get_args(annotation) or (annotation,):
        for meta in getattr(arg, "__metadata__", ()):
            func = getattr(meta, "func", None)
            if func is not None and func.__closure__:
                what = inspect.getclosurevars(func).nonlocals.get("what")
                parts.append(what or "one line, no control characters")
    return "; ".join(dict.fromkeys(parts))


def _default(field: FieldInfo) -> str:
    """As written in YAML (``null``, ``true``, ``"text"``); a nested section's is its keys'."""
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel) or value is PydanticUndefined:
        return "—"
    return f"`{json.dumps(value, default=str)}`"


def _nested(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model inside ``M``, ``M | None`` or ``dict[str, M]``, with the key suffix it adds."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and _nested(args[1]):
        return typing.cast(type[BaseModel], _nested(args[1])[0]), ".<name>"  # type: ignore[index]
    if origin is list and _nested(args[0]):
        return typing.cast(type[BaseModel], _nested(args[0])[0]), "[]"  # type: ignore[index]
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if _nested(arg):
                return _nested(arg)
    return None


def model_rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, ...]]:
    """(key path, type, default, valid values, description) for every key, nested ones
    after their parent, depth first in the schema's order."""
    comments = _field_comments(model)
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        nested = _nested(field.annotation)
        text = field.description or comments.get(name, "")
        if not text and nested and nested[0].__doc__ and "Base:" not in nested[0].__doc__:
            text = " ".join(nested[0].__doc__.split())
        row = (key, _type_name(field.annotation), _default(field), _valid(field), text)
        yield tuple(c.replace("|", "\\|").replace("\n", " ") for c in row)
        if nested:
            yield from model_rows(nested[0], key + nested[1] + ".")


def _table(rows: list[tuple[str, ...]]) -> str:
    head = "| key | type | default | valid values | description |\n|---|---|---|---|---|\n"
    return head + "".join(f"| `{k}` | {t} | {d} | {v} | {x} |\n" for k, t, d, v, x in rows)


def spec_page() -> str:
    from xvhpc.spec.schema import ExperimentSpec

    rows = list(model_rows(ExperimentSpec))
    return (
        "# Spec keys\n\n*Generated from `xvhpc/spec/schema.py` by `scripts/gen_docs.py`; "
        "do not edit.* Unknown keys are errors. `<name>` stands for a key you choose "
        f"(a class name under `data.augment`). {len(rows)} keys.\n\n" + _table(rows)
    )


def site_page() -> str:
    from xvhpc.backends.base import LAUNCHERS, SCHEDULERS
    from xvhpc.spec.site import LOCAL_SITE_YAML, SiteConfig

    registered = {"scheduler": SCHEDULERS.names(), "launcher": LAUNCHERS.names()}
    rows = [
        (k, t, d, ", ".join(f"`{n}`" for n in registered[k.strip("`")]), x)
        if k in registered
        else (k, t, d, v, x)
        for k, t, d, v, x in model_rows(SiteConfig)
    ]
    return (
        "# Site-config keys\n\n*Generated from `xvhpc/spec/site.py` by `scripts/gen_docs.py`; "
        "do not edit.* Every value is written into job scripts and checked as shown. "
        "`<name>` stands for a queue name.\n\n" + _table(rows) + "\n## The built-in `local` "
        f"site\n\n```yaml\n{LOCAL_SITE_YAML}```\n"
    )


def _flag_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
    if action.nargs == "?":
        names += " (optional)"
    choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices else ""
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
    if getattr(action, "required", False) and action.option_strings:
        shown = "**required**"
    text = (action.help or "").replace("|", "\\|")
    return f"| {names} | {shown} | {choices} | {text} |\n"


def cli_page() -> str:
    from xvhpc.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = [
        "# Command line\n\n*Generated from `xvhpc/cli.py`'s argparse parser by "
        "`scripts/gen_docs.py`; do not edit.* Verbs marked *(job step)* are what the "
        "compiled job scripts run.\n\n`xvhpc --version` prints the version and git commit.\n"
    ]
    for name, verb in sub.choices.items():
        out.append(f"\n## `xvhpc {name}`\n\n{verb.description or ''}\n\n")
        out.append("| argument | default | choices | description |\n|---|---|---|---|\n")
        for action in verb._actions:
            if not isinstance(action, argparse._HelpAction):
                out.append(_flag_row(action))
    return "".join(out)


def pages() -> dict[str, str]:
    """Path under ``docs/`` → Markdown of each generated page."""
    return {
        "reference/spec.md": spec_page(),
        "reference/site.md": site_page(),
        "reference/cli.md": cli_page(),
    }


# pages other people are writing: listed in mkdocs.yml's nav, left out of it until they exist
OPTIONAL_PAGES = {"threat-model-hardening.md"}


def _drop_absent(nav: list[Any], docs: Path) -> list[Any]:
    """The nav without entries naming an absent optional page (and without emptied sections)."""
    out: list[Any] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            value = _drop_absent(value, docs)
            if value:
                out.append({next(iter(entry)): value})
        elif not (value in OPTIONAL_PAGES and not (docs / value).is_file()):
            out.append(entry)
    return out


def on_config(config: Any) -> Any:
    """MkDocs hook: a strict build stays green before an optional page lands, and lists it
    in the nav the moment it exists."""
    if config.get("nav"):
        config["nav"] = _drop_absent(config["nav"], Path(config["docs_dir"]))
    return config


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages to the build (in memory)."""
    from mkdocs.structure.files import File

    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/reference")
    for path, text in pages().items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
        print(out / path)
