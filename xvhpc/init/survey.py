"""Look at a data source the way ingest will: the task's own catalog (torch-free where the task
names one: ``TaskInfo.catalog``) lists and splits it, then every listed image's header is read
(PIL, or pydicom without pixels) for its format and size, and a small reduced decode gives its
perceptual hash, so near-duplicates across the would-be split and unreadable files show now,
with ingest's own reasons, not after a queue wait.
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.catalog import display_name
from ..data.decode import BadImage, DecodeOptions, decode, sniff
from ..data.dedupe import dhash, near_duplicates
from ..data.sample import Catalog, CatalogError
from ..data.video import VIDEO_SUFFIXES, BadVideo
from ..registry import DEFAULT_TASK, load_task, task_info
from ..spec.schema import DataSpec
from .columns import ColumnError, guess_coco_group, guess_csv

MAX_INSPECT = 5000  # images whose headers and hashes are read (evenly spread over a larger set)
HASH_OPTIONS = DecodeOptions(size=32, channels=1, resize="squash", max_decode_bytes=1 << 30)


class InitError(Exception):
    """The source cannot be surveyed (missing, unreadable, no labels): one line saying why."""


@dataclass
class Survey:
    """What ``xvhpc init`` found, and the data section it chose to read the source with."""

    source: Path
    kind: str  # folders | csv | coco
    task: str
    data: dict[str, Any]  # the spec's data: section (source, format, csv/coco keys)
    why: dict[str, str]  # dotted spec key → why it was chosen
    catalog: Catalog
    formats: Counter = field(default_factory=Counter)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) per image
    unreadable: list[dict[str, str]] = field(default_factory=list)
    inspected: int = 0
    gray: int = 0  # images stored with one channel
    duplicates: dict = field(default_factory=dict)
    task_guess: str = ""  # why the task was guessed ("" when --task chose it)

    @property
    def counts(self) -> Counter:
        """Images per class (detection, segmentation: per stratum, the class the split uses)."""
        return Counter(s.label for s in self.catalog.samples)

    @property
    def groups(self) -> int:
        return len({s.group for s in self.catalog.samples if s.group is not None})


def source_kind(source: Path) -> str:
    """folders, csv or coco, as ingest's ``data.format: auto`` decides."""
    if source.is_dir():
        return "folders"
    if source.suffix.lower() == ".csv":
        return "csv"
    if source.suffix.lower() == ".json":
        return "coco"
    raise InitError(f"{source}: neither a folder, a .csv nor a COCO .json")


def guess_task(source: Path, kind: str, columns: list[str], doc: dict | None) -> tuple[str, str]:
    """(task, why) from the shape of the data: boxes → detect, masks → segment, time segments
    → action, else the
    default; the task names come from the registry, so an unregistered one is never chosen."""
    known = set(_known_tasks())
    guess, why = DEFAULT_TASK, "one label per image"
    if kind == "folders" and (source / "images").is_dir() and (source / "masks").is_dir():
        guess, why = "segment", "images/ and masks/ folders"
    elif kind == "csv" and {"x0", "y0", "x1", "y1"} <= set(columns):
        guess, why = "detect", "box columns x0, y0, x1, y1"
    elif kind == "csv" and {"start", "end"} <= set(columns):
        guess, why = "action", "time-segment columns start, end"
    elif doc is not None:
        anns = [a for a in doc.get("annotations", []) if isinstance(a, dict)]
        boxes = sum("bbox" in a for a in anns)
        masks = sum(bool(a.get("segmentation")) for a in anns)
        if anns and boxes >= len(anns) / 2:
            guess, why = "detect", f"{boxes} COCO annotations with a bbox"
        elif anns and masks >= len(anns) / 2:
            guess, why = "segment", f"{masks} COCO annotations with a segmentation"
    return (guess, why) if guess in known else (DEFAULT_TASK, "one label per image")


def _known_tasks() -> list[str]:
    from ..registry import task_infos

    return list(task_infos())


def _read_doc(source: Path) -> dict:
    from ..data.catalog import read_coco

    try:
        return read_coco(source)
    except CatalogError as exc:
        raise InitError(str(exc)) from None


def data_section(
    source: Path, kind: str, columns: dict[str, str | None], doc: dict | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec's data: keys that make ingest read ``source`` (CSV columns, COCO group field)."""
    data: dict[str, Any] = {"source": str(source)}
    why: dict[str, str] = {"data.source": f"{kind}: absolute, so the spec runs from any folder"}
    if kind == "csv":
        try:
            found = guess_csv(source, columns["path"], columns["label"], columns["group"])
        except ColumnError as exc:
            raise InitError(str(exc)) from None
        csv_keys = {
            k: v
            for k in ("path_column", "path_pattern", "label_column", "group_column")
            if (v := getattr(found, k)) is not None
        }
        data["csv"] = csv_keys
        why |= {f"data.csv.{k}": v for k, v in found.why.items()}
    elif kind == "coco" and doc is not None:
        group, reason = guess_coco_group(doc.get("images", []))
        if group:
            data["coco"] = {"group_field": group}
            why["data.coco.group_field"] = reason
    return data, why


def build_catalog(task: str, source: Path, data: dict[str, Any]) -> Catalog:
    """The task's catalog of the source: its torch-free builder where ``TaskInfo.catalog``
    names one, else the task's hooks (which import torch: slower, same answer)."""
    spec = DataSpec.model_validate(data)
    builder = task_info(task).catalog_builder() or load_task(task).catalog
    try:
        return builder(source, spec)
    except CatalogError as exc:
        raise InitError(f"task {task}: {exc}") from None


def header(path: str) -> tuple[str, int, int, bool]:
    """(format, width, height, one channel) from the file's header only; ``BadImage`` with the reason."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from None
    if not head:
        raise BadImage("empty file (0 bytes)")
    if sniff(head) == "dicom" or path.lower().endswith((".dcm", ".dicom")):
        import pydicom  # only where a DICOM file is listed

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            gray = int(getattr(ds, "SamplesPerPixel", 1)) == 1
            return "DICOM", int(ds.Columns), int(ds.Rows), gray
        except Exception as exc:  # pydicom raises many kinds on a broken header
            raise BadImage(f"DICOM header unreadable: {type(exc).__name__}: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                gray = image.mode in ("1", "L", "I", "I;16", "F")
                return str(image.format), image.size[0], image.size[1], gray
    except Exception as exc:  # PIL's own kinds, a bomb warning made an error
        raise BadImage(f"not an image PIL can read: {type(exc).__name__}: {exc}") from None


def video_header(path: str, max_pixels: int) -> tuple[str, int, int, bool]:
    """(format, width, height, one channel) of a video from its container's header (PyAV,
    imported only here); ``BadVideo`` with the reason, as ingest would give it."""
    from ..data.video import VideoOptions, open_video
    from ..data.video import header as stream_header

    with open_video(path) as container:
        found = stream_header(container, VideoOptions(), max_pixels)
        return f"video ({Path(path).suffix.lower().lstrip('.')})", found.width, found.height, False


def inspect_files(survey: Survey, max_pixels: int) -> None:
    """Headers, sizes and dHashes of the listed images (at most MAX_INSPECT, evenly spread);
    a file that ingest would skip gets ingest's reason (the same decoder, reduced)."""
    originals = survey.catalog.samples
    step = max(1, len(originals) // MAX_INSPECT)
    chosen = originals[::step][:MAX_INSPECT]
    entries = []
    opts = DecodeOptions(**{**HASH_OPTIONS.__dict__, "max_pixels": max_pixels})
    for sample in chosen:
        if sample.path.lower().endswith(VIDEO_SUFFIXES):  # its header only: no frame decoded
            try:
                fmt, width, height, gray = video_header(sample.path, max_pixels)
            except BadVideo as exc:
                survey.unreadable.append({"path": sample.rel, "reason": str(exc)})
                continue
            survey.formats[fmt] += 1
            survey.sizes.append((width, height))
            continue
        try:
            fmt, width, height, gray = header(sample.path)
            frame = decode(sample.path, opts, name=sample.rel)[0]
        except BadImage as exc:
            survey.unreadable.append({"path": sample.rel, "reason": str(exc)})
            continue
        except Exception as exc:  # a decoder bug: listed, the survey goes on (as ingest)
            reason = f"decoder error: {type(exc).__name__}: {exc}"
            survey.unreadable.append({"path": sample.rel, "reason": reason})
            continue
        survey.formats[fmt] += 1
        survey.gray += gray
        survey.sizes.append((width, height))
        part = f"fold {sample.fold}" if sample.fold >= 0 else sample.split
        entries.append({"part": part, "dhash": dhash(frame), "source": sample.rel})
    survey.inspected = len(chosen)
    survey.duplicates = near_duplicates(entries, limit=10)


def survey(
    source: Path, task: str | None, columns: dict[str, str | None], max_pixels: int
) -> Survey:
    """Everything ``xvhpc init`` prints and chooses from, for ``source``."""
    if not source.exists():
        raise InitError(f"{display_name(str(source))}: does not exist")
    if not (source.is_dir() or source.is_file()):  # a FIFO would block the read for ever
        shown = display_name(str(source))
        raise InitError(f"{shown}: not a regular file nor a folder (a FIFO or device is not read)")
    kind = source_kind(source)
    doc = _read_doc(source) if kind == "coco" else None
    names: list[str] = []
    if kind == "csv":
        from .columns import read_rows

        try:
            names = read_rows(source)[0]
        except ColumnError as exc:
            raise InitError(str(exc)) from None
    guessed = ""
    if task is None:
        task, guessed = guess_task(source, kind, names, doc)
    data, why = data_section(source, kind, columns, doc)
    catalog = build_catalog(task, source, data)
    found = Survey(source, kind, task, data, why, catalog, task_guess=guessed)
    inspect_files(found, max_pixels)
    return found


def spread(values: list[int]) -> str:
    """min / median / max of ``values``."""
    return f"{min(values)} / {int(statistics.median(values))} / {max(values)}"


def summary(s: Survey) -> list[str]:
    """The lines ``xvhpc init`` prints: what the data is, per class, formats, sizes, problems."""
    shown = display_name(str(s.source))
    task = f"{s.task}" + (f" (guessed: {s.task_guess}; --task to choose)" if s.task_guess else "")
    lines = [f"{shown}: {s.kind}, task {task}"]
    counts = s.counts
    lines.append(f"  {sum(counts.values())} labelled image(s), {len(s.catalog.classes)} class(es): "
                 + ", ".join(s.catalog.classes)
                 + (f"; {s.catalog.unlabelled} unlabelled" if s.catalog.unlabelled else ""))  # fmt: skip
    lines.append("  images per class (boxes, masks: the class an image is split by):")
    top = max(counts.values())
    for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rare = f"  ← {top / n:.0f}× fewer than the largest class" if n * 3 <= top else ""
        lines.append(f"    {label:24s} {n:6d}{rare}")
    for key, reason in s.why.items():
        if key.startswith(("data.csv", "data.coco")):
            lines.append(f"  {key.split('.')[-1]}: {_value(s.data, key)} ({reason})")
    if s.groups:
        lines.append(f"  {s.groups} patient/group(s): the split keeps each group on one side")
    if s.formats:
        formats = ", ".join(f"{k} {v}" for k, v in s.formats.most_common())
        lines.append(f"  formats: {formats}")
        widths, heights = [w for w, _ in s.sizes], [h for _, h in s.sizes]
        lines.append(f"  width  min / median / max: {spread(widths)} px")
        lines.append(f"  height min / median / max: {spread(heights)} px")
    if s.inspected < len(s.catalog.samples):
        lines.append(f"  (headers and hashes of {s.inspected} of {len(s.catalog.samples)} images)")
    bad = s.catalog.skipped + s.unreadable
    if bad:
        lines.append(f"  {len(bad)} file(s) ingest would skip:")
        lines += [f"    {b['path']}: {b['reason']}" for b in bad[:20]]
        lines += [f"    … and {len(bad) - 20} more"] if len(bad) > 20 else []
    pairs = s.duplicates.get("pairs", 0)
    if pairs:
        lines.append(f"  {pairs} near-duplicate pair(s) across the would-be split (dHash):")
        lines += [
            f"    {e['a']} ({e['part_a']}) ~ {e['b']} ({e['part_b']}), {e['distance']} bit(s)"
            for e in s.duplicates["examples"][:5]
        ]
    lines += [f"  note: {n}" for n in s.catalog.notes[:10]]
    return lines


def _value(data: dict[str, Any], key: str) -> str:
    node: Any = data
    for part in key.split(".")[1:]:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return json.dumps(node, ensure_ascii=False) if not isinstance(node, str) else node
