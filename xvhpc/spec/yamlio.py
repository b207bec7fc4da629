"""YAML loading that remembers the line of every key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, SpecError

LineMap = dict[str, int]


def _construct(node: yaml.Node, path: str, lines: LineMap, loader: yaml.SafeLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            child = f"{path}.{key}" if path else str(key)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, child, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, f"{path}.{index}", lines, loader)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def load_yaml_with_lines(path: str | Path) -> tuple[dict[str, Any], LineMap]:
    """Parse ``path``; return the data and a map from dotted key path to line number."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_yaml_with_lines(text, str(path))


def parse_yaml_with_lines(text: str, path: str) -> tuple[dict[str, Any], LineMap]:
    """Parse YAML ``text`` (named ``path`` in errors) with the line of every key path."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: LineMap = {}
        data = _construct(node, "", lines, loader) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([Problem(str(path), line, "", f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError([Problem(str(path), 1, "", "expected a mapping of sections at the top")])
    return data, lines


def line_for(lines: LineMap, key: str) -> int | None:
    """The line of ``key`` or of its nearest ancestor present in the file."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return lines.get("")
