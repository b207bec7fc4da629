"""The documentation: generated reference pages cover every key and flag; the README stays a
short entry point whose links lead into docs/."""

from __future__ import annotations

import argparse
import importlib.util
import re
import typing
from collections.abc import Iterator
from types import ModuleType, UnionType

import pytest
from pydantic import BaseModel

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key path of a model, walked here independently of the generator."""
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        yield key
        stack: list[tuple[typing.Any, str]] = [(field.annotation, "")]
        while stack:
            ann, suffix = stack.pop()
            origin, args = typing.get_origin(ann), typing.get_args(ann)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                yield from _keys(ann, key + suffix + ".")
            elif origin in (typing.Union, UnionType):
                stack += [(a, suffix) for a in args]
            elif origin is dict:
                stack.append((args[1], suffix + ".<name>"))
            elif origin is list:
                stack.append((args[0], suffix + "[]"))


def test_every_spec_key_is_in_the_generated_reference(gen_docs: ModuleType) -> None:
    from xvhpc.spec.schema import ExperimentSpec

    page = gen_docs.spec_page()
    keys = list(_keys(ExperimentSpec))
    assert len(keys) > 100 and "data.augment.<name>.copies" in keys
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing, f"spec keys missing from docs/reference/spec.md: {missing}"
    row = next(line for line in page.splitlines() if line.startswith("| `data.resize` |"))
    assert '`"letterbox"`' in row and '"tile"' in row, row  # default and valid values


def test_every_site_key_and_cli_flag_is_in_the_reference(gen_docs: ModuleType) -> None:
    from xvhpc.cli import build_parser
    from xvhpc.spec.site import SiteConfig

    site = gen_docs.site_page()
    missing = [k for k in _keys(SiteConfig) if f"| `{k}` |" not in site]
    assert not missing, f"site keys missing from docs/reference/site.md: {missing}"
    cli = gen_docs.cli_page()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for verb, parser in sub.choices.items():
        section = cli.split(f"## `xvhpc {verb}`\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for flag in action.option_strings or [action.dest]:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in section, f"xvhpc {verb} {flag} missing"


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "bash scripts/demo.sh" in readme and "bash .ci/run" in readme
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_every_docs_page_is_in_the_nav() -> None:
    """A page left out of mkdocs.yml's nav is built but unreachable from the menu."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    assert pages
    assert not [p for p in pages if f": {p}" not in nav], "pages missing from mkdocs.yml nav"
