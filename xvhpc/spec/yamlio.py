"""YAML loading that remembers the line of every key path, and refuses hostile documents.

Specs and site configs are small (a few KB). Whatever a file holds, reading it is bounded:
at most ``MAX_BYTES`` of UTF-8 text, at most ``MAX_VALUES`` values once aliases are expanded
(a "billion laughs" alias bomb is refused before anything is built), no alias that contains
itself, no nesting deeper than ``MAX_DEPTH``, and no key given twice. Every refusal is a
``Problem`` naming the file, the line and the key path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, SpecError

LineMap = dict[str, int]

MAX_BYTES = 64 * 1024  # a spec is ~1-3 KB; 64 KiB still parses in well under a second
MAX_VALUES = 50_000  # scalars + collections after alias expansion
MAX_DEPTH = 64  # nesting levels (a spec needs 5)

# libyaml when PyYAML was built with it: ~10x faster, and it caps nesting itself
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _fail(file: str, line: int | None, key: str, message: str) -> SpecError:
    return SpecError([Problem(file, line, key, message)])


def _line_of(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str, int | None]]:
    """(child node, its key path, its line) for a mapping's keys and values or a list's items."""
    if isinstance(node, yaml.MappingNode):
        out = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            child = f"{path}.{name}" if path else str(name)
            line = _line_of(key_node.start_mark)
            out += [(key_node, child, line), (value_node, child, line)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            (item, f"{path}.{i}", _line_of(item.start_mark)) for i, item in enumerate(node.value)
        ]
    return []


def check_graph(root: yaml.Node, file: str) -> None:
    """Refuse recursive aliases, alias bombs and deep nesting, in time linear in the nodes.

    Aliases make the node graph a DAG (or, for an alias inside its own anchor, a cycle); the
    size a node would have once built is computed once per node, not once per use."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    state: dict[int, int] = {}  # 1: its subtree is being walked, 2: done
    stack: list[tuple[yaml.Node, str, int | None, bool]] = [
        (root, "", _line_of(root.start_mark), False)
    ]
    while stack:
        node, path, line, finished = stack.pop()
        nid = id(node)
        if finished:
            kids = _children(node, path)
            size[nid] = 1 + sum(size[id(k)] for k, _, _ in kids)
            depth[nid] = 1 + max((depth[id(k)] for k, _, _ in kids), default=0)
            state[nid] = 2
            if size[nid] > MAX_VALUES:
                raise _fail(
                    file,
                    line,
                    path,
                    f"expands to more than {MAX_VALUES:,} values (through aliases: an alias "
                    "bomb?); write the values out",
                )
            if depth[nid] > MAX_DEPTH:
                top = ".".join(path.split(".")[:3])  # the full path would be MAX_DEPTH long
                raise _fail(file, line, top, f"nested more than {MAX_DEPTH} levels deep")
            continue
        seen = state.get(nid)
        if seen == 2:
            continue
        if seen == 1:  # its own subtree reaches it again
            raise _fail(file, line, path, "an alias refers to a node that contains it (recursive)")
        state[nid] = 1
        stack.append((node, path, line, True))
        stack.extend((k, p, ln, False) for k, p, ln in reversed(_children(node, path)))


def _scalar(node: yaml.Node, loader: Any, file: str, path: str) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        message = getattr(exc, "problem", None) or str(exc)
        raise _fail(
            file, _line_of(node.start_mark), path, f"cannot read value: {message}"
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a bad date, a 5,000-digit integer …
        shown = node.value if len(node.value) <= 40 else node.value[:40] + "…"
        raise _fail(
            file,
            _line_of(node.start_mark),
            path,
            f"cannot read value {shown!r}: {str(exc).split(';')[0]}",
        ) from None


def _construct(
    node: yaml.Node, path: str, lines: LineMap, loader: Any, file: str, problems: list[Problem]
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        problems.append(
            Problem(file, _line_of(node.start_mark), path, f"tag {node.tag!r} is not allowed")
        )
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(
                    Problem(file, line, path, "a key must be a plain name, not a list or mapping")
                )
                continue
            if key_node.tag == _MERGE_TAG:
                problems.append(
                    Problem(
                        file, line, path, "merge keys (<<) are not supported: write the keys out"
                    )
                )
                continue
            key = _scalar(key_node, loader, file, path)
            child = f"{path}.{key}" if path else str(key)
            if key in out:
                problems.append(
                    Problem(
                        file,
                        line,
                        child,
                        f"duplicate key (first given at line {first_line[key]}); give it once",
                    )
                )
                continue
            first_line[key] = line
            lines[child] = line
            out[key] = _construct(value_node, child, lines, loader, file, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, f"{path}.{index}", lines, loader, file, problems)
            for index, item in enumerate(node.value)
        ]
    return _scalar(node, loader, file, path)


def read_text(path: str | Path) -> str:
    """The text of a spec or site file: a regular file of at most MAX_BYTES of UTF-8."""
    path = Path(path)
    name = str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise _fail(name, None, "", f"cannot read: {kind}")
        if info.st_size > MAX_BYTES:
            raise _fail(
                name,
                None,
                "",
                f"{info.st_size:,} bytes: a spec or site file may be at most {MAX_BYTES // 1024} KiB",
            )
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(name, None, "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise _fail(name, None, "", f"a spec or site file may be at most {MAX_BYTES // 1024} KiB")
    return decode_text(data, name)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text (a BOM allowed) or a problem naming the line of the first bad byte."""
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise _fail(name, line, "", "a binary file (NUL byte), not YAML text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(
            name, line, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def load_yaml_with_lines(path: str | Path) -> tuple[dict[str, Any], LineMap]:
    """Parse ``path``; return the data and a map from dotted key path to line number."""
    return parse_yaml_with_lines(read_text(path), str(path))


def parse_yaml_with_lines(text: str, path: str) -> tuple[dict[str, Any], LineMap]:
    """Parse YAML ``text`` (named ``path`` in errors) with the line of every key path."""
    path = str(path)
    if len(text) > MAX_BYTES:
        raise _fail(path, None, "", f"a spec or site file may be at most {MAX_BYTES // 1024} KiB")
    loader = _Loader(text)
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        lines: LineMap = {}
        if node is None:
            data: Any = {}
        else:
            check_graph(node, path)
            data = _construct(node, "", lines, loader, path, problems)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = _line_of(mark)
        position = getattr(exc, "position", None)
        if line is None and isinstance(position, int):
            line = text[:position].count("\n") + 1  # a reader error: a forbidden character
        raise _fail(path, line, "", f"not valid YAML: {exc}") from None
    except RecursionError:  # the pure-Python parser on absurd nesting (libyaml caps it)
        raise _fail(path, None, "", f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    if problems:
        raise SpecError(problems)
    if not isinstance(data, dict):
        raise _fail(path, 1, "", "expected a mapping of sections at the top")
    return data, lines


def line_for(lines: LineMap, key: str) -> int | None:
    """The line of ``key`` or of its nearest ancestor present in the file."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return lines.get("")
