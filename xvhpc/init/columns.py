"""Which CSV columns (or COCO image fields) hold the path, the label and the patient/group.

Guessed from the names people give them and from the values: a path column's values end in an
image suffix; a pattern column's values are the names of image files beside the CSV (the
figure-1 X-rays' ``patientid`` → ``images/{patientid}.*``); a label column has few distinct
values; a group column is named like patient/subject/case or repeats its values. Every guess
can be overridden by a flag of ``xvhpc init``, and the summary says which column won and why.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data.catalog import display_name, read_csv_text
from ..data.video import VIDEO_SUFFIXES

# images, and videos (data.video, task: action): what a path column holds
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom", *VIDEO_SUFFIXES
)  # fmt: skip
LABEL_WORDS = ("label", "class", "finding", "diagnosis", "category", "target", "outcome", "y")
GROUP_WORDS = ("patient", "subject", "participant", "case", "person", "study", "group")
PATH_WORDS = ("path", "file", "filename", "file_name", "image", "img")
MAX_ROWS = 200_000  # rows read to guess (a larger CSV is guessed from its first rows)
MAX_LISTED = 100_000  # files listed beside a CSV to match a pattern column
MAX_LABELS = 100  # distinct values above which a column is not a label


class ColumnError(Exception):
    """The CSV cannot be read or holds no usable path and label columns (the message says)."""


@dataclass
class Columns:
    """The guessed reading of a CSV: the spec's ``data.csv`` keys and why each was chosen."""

    path_column: str | None = None
    path_pattern: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    why: dict[str, str] = field(default_factory=dict)  # data.csv.<key> → the reason
    rows: int = 0
    columns: list[str] = field(default_factory=list)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+|(?<=[a-z])(?=id$)", name.lower()) if w]


def _named(name: str, words: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(w in _words(name) or lowered.startswith(w) for w in words)


def listed(columns: list[str], most: int = 40) -> str:
    """Column names for a message: the first ``most`` (a CSV may have a million columns)."""
    shown = ", ".join(display_name(c) for c in columns[:most])
    return shown + (f", … ({len(columns) - most:,} more)" if len(columns) > most else "")


def read_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and up to MAX_ROWS rows; ``ColumnError`` naming the file and line for a
    CSV the csv module refuses (a field over its 128 KiB limit, a NUL byte)."""
    try:
        text = read_csv_text(csv_path)
    except OSError as exc:
        raise ColumnError(f"{csv_path}: unreadable: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[dict[str, str]] = []
    try:
        columns = [c for c in (reader.fieldnames or []) if c]
        for row in reader:
            rows.append({k: (v or "").strip() for k, v in row.items() if isinstance(v, str)})
            if len(rows) >= MAX_ROWS:
                break
    except csv.Error as exc:
        raise ColumnError(
            f"{csv_path}: not a usable CSV after line {reader.line_num}: {exc}"
        ) from None
    if not columns:
        raise ColumnError(f"{csv_path}: no header line (the first line names the columns)")
    return columns, rows


def _values(rows: list[dict[str, str]], column: str) -> list[str]:
    return [r[column] for r in rows if r.get(column)]


def _stems(folder: Path) -> dict[str, Counter]:
    """Image-file stems in ``folder`` and its direct sub-folders (links not followed), by the
    sub-folder they are in ("" for the folder itself): where a pattern column could point."""
    found: dict[str, Counter] = {}
    listed = 0
    for sub in ["", *sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False))]:
        if sub.startswith(".") or listed > MAX_LISTED:
            continue
        stems: Counter = Counter()
        try:
            with os.scandir(folder / sub) as entries:
                for entry in entries:
                    listed += 1
                    if entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(
                        IMAGE_SUFFIXES
                    ):
                        stems[entry.name.rsplit(".", 1)[0]] += 1
        except OSError:
            continue
        if stems:
            found[sub] = stems
    return found


def _path_column(
    csv_path: Path, columns: list[str], rows: list[dict[str, str]], out: Columns
) -> None:
    """A column of image paths, else a column naming image files beside the CSV (a pattern)."""
    for column in sorted(columns, key=lambda c: not _named(c, PATH_WORDS)):
        values = _values(rows, column)
        if values and sum(v.lower().endswith(IMAGE_SUFFIXES) for v in values) >= len(values) / 2:
            out.path_column = column
            out.why["path_column"] = f"its values are image file names ({values[0]!r}, …)"
            return
    best: tuple[int, str, str] | None = None
    for sub, stems in _stems(csv_path.parent).items():
        for column in columns:
            if re.search(r"[.\[\]{}:!]", column):  # not usable as a {column} format field
                continue
            values = _values(rows, column)
            hits = sum(v in stems for v in values)
            if values and hits >= len(values) / 2 and (best is None or hits > best[0]):
                best = (hits, sub, column)
    if best is not None:
        count, sub, column = best
        out.path_pattern = f"{sub}/{{{column}}}.*" if sub else f"{{{column}}}.*"
        out.why["path_pattern"] = (
            f"no column of file names, but {count} value(s) of {column!r} name image files "
            f"in {sub or '.'}/ beside the CSV"
        )


def _label_column(columns: list[str], rows: list[dict[str, str]], taken: set[str]) -> str | None:
    """A named label column with 2..MAX_LABELS values, else the non-id column with fewest."""
    scored = []
    for column in columns:
        distinct = set(_values(rows, column))
        if column in taken or not 2 <= len(distinct) <= min(MAX_LABELS, max(2, len(rows) // 2)):
            continue
        scored.append((not _named(column, LABEL_WORDS), len(distinct), column))
    return min(scored)[2] if scored else None


def _group_column(columns: list[str], rows: list[dict[str, str]], taken: set[str]) -> str | None:
    """Named like a patient/subject/case (any values), else an id-like column that repeats."""
    named = [c for c in columns if c not in taken and _named(c, GROUP_WORDS)]
    if named:
        return named[0]
    for column in columns:
        values = _values(rows, column)
        if column not in taken and "id" in _words(column) and len(set(values)) < len(values):
            return column
    return None


def guess_csv(csv_path: Path, path: str | None, label: str | None, group: str | None) -> Columns:
    """The CSV's columns, each from its flag where given, else guessed (``ColumnError`` when no
    path or label column can be found: the message lists the columns to choose from)."""
    columns, rows = read_rows(csv_path)
    out = Columns(rows=len(rows), columns=columns)
    for flag, value in (
        ("--path-column", path),
        ("--label-column", label),
        ("--group-column", group),
    ):
        if value is not None and value not in columns:
            raise ColumnError(f"{flag} {value!r}: no such column in {csv_path} (columns: {listed(columns)})")  # fmt: skip
    if path is not None:
        out.path_column, out.why["path_column"] = path, "--path-column"
    else:
        _path_column(csv_path, columns, rows, out)
    if out.path_column is None and out.path_pattern is None:
        raise ColumnError(
            f"{csv_path}: no column holds image paths and none names the image files beside it "
            f"(columns: {listed(columns)}); give --path-column"
        )
    taken = {out.path_column} - {None}
    out.label_column = label or _label_column(columns, rows, taken)  # type: ignore[arg-type]
    if out.label_column is None:
        raise ColumnError(
            f"{csv_path}: no column looks like labels (2 to {MAX_LABELS} distinct values; columns: "
            f"{listed(columns)}); give --label-column"
        )
    values = Counter(_values(rows, out.label_column))
    out.why["label_column"] = "--label-column" if label else (
        f"{len(values)} distinct values ({', '.join(sorted(values)[:6])})"
    )  # fmt: skip
    out.group_column = group or _group_column(columns, rows, taken | {out.label_column})  # type: ignore[arg-type]
    if out.group_column:
        found = _values(rows, out.group_column)
        repeated = len(found) - len(set(found))
        out.why["group_column"] = "--group-column" if group else (
            f"named like a patient/subject/group column; {len(set(found))} groups"
            + (f", {repeated} row(s) share one" if repeated else ", each row its own so far")
        )  # fmt: skip
    return out


GROUP_FIELD_SKIP = ("id", "file_name", "width", "height", "license", "coco_url", "flickr_url")


def guess_coco_group(images: list) -> tuple[str | None, str]:
    """A COCO image field naming the patient/group (``data.coco.group_field``), and why."""
    fields: Counter = Counter()
    for image in images[:MAX_ROWS]:
        if isinstance(image, dict):
            fields.update(k for k in image if isinstance(k, str) and k not in GROUP_FIELD_SKIP)
    for name in sorted(fields, key=lambda f: not _named(f, GROUP_WORDS)):
        values = [str(im.get(name)) for im in images[:MAX_ROWS] if isinstance(im, dict)]
        if _named(name, GROUP_WORDS) or ("id" in _words(name) and len(set(values)) < len(values)):
            repeated = len(values) - len(set(values))
            return name, f"image field named like a group; {len(set(values))} groups, {repeated} images share one"  # fmt: skip
    return None, ""
