"""What to ingest: list labelled samples (class folders or CSV), split them, plan augmentation."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import stat
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from ..spec.schema import DataSpec
from ..util import file_kind
from .folds import assign_folds, carve_select, split_samples, thin_training
from .sample import Catalog, CatalogError, Sample

_HIDDEN = (".", "_")
_VAL_NAMES = ("val", "validation", "valid")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display_name(text: str) -> str:
    """A file name as people, JSON, HTML and HDF5 see it: bytes that are not UTF-8 (kept by
    Python as lone surrogates) become ``\\xNN`` and control characters ``\\n``-style escapes,
    so one odd name can neither break a shard nor a report."""
    try:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file system produced (JSON, CSV)
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], shown)


def _inside(path: str, root: Path) -> bool:
    return Path(path).is_relative_to(root)


class _Walk:
    """What one scan of a folder source found, beyond the samples."""

    def __init__(self, root: Path, follow_links: bool):
        self.root = root
        self.follow_links = follow_links
        self.skipped: list[dict[str, str]] = []  # found, unusable: counted against max_bad_fraction
        self.ignored: list[dict[str, str]] = []  # hidden: listed, not counted
        self.notes: list[str] = []
        self.odd_names: set[str] = set()

    def rel(self, path: str | Path) -> str:
        text = str(Path(path).relative_to(self.root))
        shown = display_name(text)
        if shown != text:
            self.odd_names.add(shown)
        return shown

    def skip(self, path: str | Path, reason: str) -> None:
        self.skipped.append({"path": self.rel(path), "reason": reason})

    def link_problem(self, path: str, is_dir: bool) -> str | None:
        """Why a symbolic link is not read, or None: it must resolve, and stay inside the
        source unless data.follow_links allows otherwise."""
        target = os.path.realpath(path)
        if not os.path.exists(target):
            return "unreadable: broken link"
        if not self.follow_links and not _inside(target, self.root):
            what = "folder" if is_dir else "file"
            return (
                f"link to a {what} outside data.source ({display_name(target)}): not followed "
                "(data.follow_links: true reads it)"
            )
        return None

    def regular(self, path: str) -> str | None:
        """Why ``path`` (links resolved) is not a regular file to read, or None."""
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}"
        if not stat.S_ISREG(info.st_mode):
            return f"not a regular file ({file_kind(info.st_mode)})"
        return None

    def entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skip(folder, f"unreadable folder: {exc.strerror or exc}")
            return []

    def class_dirs(self, base: Path) -> list[tuple[str, Path]]:
        """(name, folder) of the class folders directly under ``base``; the other entries
        there are listed as skipped (files) or ignored (hidden)."""
        out = []
        for entry in self.entries(str(base)):
            path = entry.path
            if entry.name.startswith(_HIDDEN):
                kind = "folder" if entry.is_dir() else "file"
                self.ignored.append(
                    {
                        "path": self.rel(path),
                        "reason": f"hidden {kind} (name starts with . or _): not read",
                    }
                )
                continue
            if not entry.is_dir():  # follows links: a link to a file is a file here
                self.skip(path, "not inside a class folder")
                continue
            if entry.is_symlink():
                why = self.link_problem(path, is_dir=True)
                if why is not None:
                    self.skip(path, why)
                    self.notes.append(f"class folder {self.rel(path)}/ skipped: {why}")
                    continue
            out.append((entry.name, Path(path)))
        return out

    def files(self, folder: Path) -> list[str]:
        """Regular files under a class folder, recursively, in name order. Linked sub-folders
        are not descended; links, FIFOs, devices and sockets are listed with the reason."""
        found: list[str] = []
        stack = [str(folder)]
        while stack:
            current = stack.pop()
            subdirs = []
            for entry in self.entries(current):
                path = entry.path
                hidden = entry.name.startswith(".")
                try:
                    is_link = entry.is_symlink()
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = entry.is_file(follow_symlinks=False)
                except OSError as exc:
                    self.skip(path, f"unreadable: {exc.strerror or exc}")
                    continue
                if hidden:
                    kind = "folder" if is_dir else "file"
                    self.ignored.append(
                        {
                            "path": self.rel(path),
                            "reason": f"hidden {kind} (name starts with .): not read",
                        }
                    )
                elif is_dir:
                    subdirs.append(path)
                elif is_link:
                    why = self.link_problem(path, is_dir=os.path.isdir(path))
                    if why is None and os.path.isdir(path):
                        why = "link to a folder: not followed"
                    why = why or self.regular(path)
                    (self.skip(path, why) if why else found.append(path))
                elif is_file:
                    found.append(path)
                else:
                    self.skip(path, self.regular(path) or "not a regular file")
            stack.extend(sorted(subdirs, reverse=True))
        return sorted(found)


def _from_folders(
    root: Path, spec: DataSpec, catalog_notes: list[str]
) -> tuple[list[Sample], list[dict[str, str]], list[dict[str, str]]]:
    root = root.resolve()  # once: every path below is then absolute without a per-file realpath
    walk = _Walk(root, spec.follow_links)
    top = walk.class_dirs(root)
    sub = {name.lower(): path for name, path in top}
    explicit = "train" in sub and any(v in sub for v in _VAL_NAMES)
    samples: list[Sample] = []
    if explicit:
        catalog_notes.append("explicit train/ and val/ folders: their split is used as given")
        val = next(sub[v] for v in _VAL_NAMES if v in sub)
        for _name, path in top:
            if path not in (sub["train"], val):
                reason = "folder beside explicit train/ and val/ folders: not read"
                walk.ignored.append({"path": walk.rel(path), "reason": reason})
        parts = [("train", walk.class_dirs(sub["train"])), ("val", walk.class_dirs(val))]
    else:
        parts = [("train", top)]
    for split, class_dirs in parts:
        for name, class_dir in class_dirs:
            files = walk.files(class_dir)
            label = display_name(name)
            if not files:
                catalog_notes.append(f"class folder {walk.rel(class_dir)}/ is empty")
            samples.extend(Sample(f, walk.rel(f), label, None, split) for f in files)
    catalog_notes.extend(walk.notes)
    if walk.odd_names:
        catalog_notes.append(
            f"{len(walk.odd_names)} name(s) are not UTF-8 or hold control characters: shown with "
            "\\x escapes"
        )
    return samples, walk.skipped, walk.ignored


def read_csv_text(csv_path: Path) -> str:
    """The CSV's text: UTF-8 (with or without BOM), else latin-1, so a spreadsheet exported
    on Windows (cp1252) keeps its accents instead of replacement characters."""
    raw = csv_path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _from_csv(
    csv_path: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[Sample], list[dict[str, str]], int]:
    """Samples of a classification CSV; a malformed CSV (a field over the csv module's
    128 KiB limit, a NUL) is one error naming the file and line, not a traceback."""
    try:
        return _read_csv(csv_path, spec, notes)
    except csv.Error as exc:
        raise CatalogError(f"{csv_path}: not a usable CSV: {exc}") from None


def _read_csv(
    csv_path: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[Sample], list[dict[str, str]], int]:
    cfg = spec.csv
    base = csv_path.parent
    listed: list[tuple[int, Sample]] = []  # (CSV line, sample)
    skipped: list[dict[str, str]] = []
    unlabelled = 0
    with io.StringIO(read_csv_text(csv_path), newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        needed = (
            [cfg.label_column]
            + ([] if cfg.path_pattern else [cfg.path_column])
            + ([cfg.group_column] if cfg.group_column else [])
        )
        missing = [c for c in needed if c not in columns]
        if missing:
            raise CatalogError(
                f"{csv_path}: column(s) {', '.join(missing)} not found (columns: {', '.join(columns)}); set data.csv.*_column"
            )
        for row_number, row in enumerate(reader, start=2):
            label = (row.get(cfg.label_column) or "").strip()
            label = display_name(cfg.label_map.get(label, label))
            if not label:
                unlabelled += 1
                continue
            if cfg.path_pattern:
                try:
                    pattern = cfg.path_pattern.format(**row)
                except (KeyError, IndexError, ValueError, AttributeError) as exc:
                    raise CatalogError(
                        f"data.csv.path_pattern {cfg.path_pattern!r}: cannot fill it from CSV "
                        f"line {row_number} ({type(exc).__name__}: {exc}); name columns as "
                        "{column}"
                    ) from None
                matches = sorted(glob.glob(str(base / pattern)))
                rel = display_name(pattern)
                if not matches:
                    skipped.append(
                        {"path": rel, "reason": f"file not found (CSV line {row_number})"}
                    )
                    continue
                file = Path(matches[0])
            else:
                rel = display_name((row.get(cfg.path_column) or "").strip())
                file = base / (row.get(cfg.path_column) or "").strip()
                if not rel:
                    skipped.append(
                        {
                            "path": f"<line {row_number}>",
                            "reason": f"no path (CSV line {row_number})",
                        }
                    )
                    continue
            why = _unusable(file, base, spec.follow_links)
            if why:
                skipped.append({"path": rel, "reason": f"{why} (CSV line {row_number})"})
                continue
            group = None
            if cfg.group_column:
                group = (row.get(cfg.group_column) or "").strip() or None
            shown = str(file.relative_to(base)) if file.is_relative_to(base) else str(file)
            listed.append(
                (row_number, Sample(str(file.resolve()), display_name(shown), label, group))
            )
    samples, more_skipped = _once_per_file(listed, notes)
    return samples, skipped + more_skipped, unlabelled


def outside(file: Path, root: Path, follow_links: bool) -> str | None:
    """Why a file a manifest lists is not read because it lies outside ``root`` (the CSV's or
    COCO image folder): ``../``, an absolute path or a link that resolves out of it. Manifests
    are untrusted, so only ``data.follow_links: true`` reads such files. Resolving touches
    only the names (lstat, readlink): the file itself is never opened."""
    if follow_links:
        return None
    try:
        real, top = os.path.realpath(file), os.path.realpath(root)
    except (OSError, ValueError) as exc:  # a NUL byte in the name
        return f"invalid path: {exc}"
    if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
        return None
    return (
        f"outside the image folder {display_name(top)} (resolves to {display_name(real)}): "
        "not read (data.follow_links: true reads it)"
    )


def _unusable(file: Path, root: Path | None = None, follow_links: bool = True) -> str | None:
    """Why a listed file cannot be read ("file not found", "not a regular file (a FIFO)",
    outside ``root``), or None for a regular file (links resolved)."""
    if root is not None and (why := outside(file, root, follow_links)):
        return why
    try:
        info = os.stat(file)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except ValueError as exc:  # a name with a NUL byte, which no file system holds
        return f"invalid path: {exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({file_kind(info.st_mode)})"
    return None


def _once_per_file(
    listed: list[tuple[int, Sample]], notes: list[str]
) -> tuple[list[Sample], list[dict[str, str]]]:
    """A CSV may list a file twice: with the same label it is used once; with two labels it is
    skipped (classification takes one label per image). Both are noted in the manifest."""
    rows: dict[str, list[tuple[int, Sample]]] = defaultdict(list)
    for row_number, sample in listed:
        rows[sample.path].append((row_number, sample))
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    twice: list[str] = []
    conflicting: list[str] = []
    for entries in rows.values():
        first = entries[0][1]
        lines = ", ".join(str(n) for n, _ in entries)
        labels = sorted({s.label for _, s in entries})
        if len(labels) > 1:
            shown = ", ".join(f"{s.label} on line {n}" for n, s in entries)
            skipped.append(
                {
                    "path": first.rel,
                    "reason": f"listed with {len(labels)} labels ({shown}); classification "
                    "takes one label per image",
                }
            )
            conflicting.append(f"{first.rel} (lines {lines})")
            continue
        if len(entries) > 1:
            twice.append(f"{first.rel} (lines {lines})")
        samples.append(first)
    if twice:
        notes.append(
            f"{len(twice)} file(s) listed more than once in the CSV with the same label, used "
            f"once: {'; '.join(twice[:5])}{' …' if len(twice) > 5 else ''}"
        )
    if conflicting:
        notes.append(
            f"{len(conflicting)} file(s) listed in the CSV with different labels, skipped: "
            f"{'; '.join(conflicting[:5])}{' …' if len(conflicting) > 5 else ''}"
        )
    return samples, skipped


def read_coco(json_path: Path) -> dict:
    """The COCO document (a Label Studio JSON export read as one), or a ``CatalogError``
    saying why it is not one."""
    try:
        doc = json.loads(json_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{json_path}: not valid JSON: {exc}") from None
    except RecursionError:  # [[[[… nested deeper than the parser's stack
        raise CatalogError(f"{json_path}: JSON nested too deeply to be COCO") from None
    from .labelstudio import coco_of_export, is_export

    if is_export(doc):  # a Label Studio JSON export: its reviewed tasks, as COCO
        doc = coco_of_export(json_path, doc)
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise CatalogError(
            f"{json_path}: not COCO JSON (needs lists 'images', 'annotations' and 'categories')"
        )
    return doc


def _from_coco(
    json_path: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[Sample], list[dict[str, str]], int]:
    """COCO JSON (images, annotations, categories) with one category per image."""
    cfg = spec.coco
    doc = read_coco(json_path)
    try:
        names = {c["id"]: str(c["name"]) for c in doc["categories"]}
        labels: dict[object, set[str]] = defaultdict(set)
        unknown: dict[object, set[object]] = defaultdict(set)
        for ann in doc["annotations"]:
            category = ann["category_id"]
            if category in names:
                labels[ann["image_id"]].add(names[category])
            else:
                unknown[ann["image_id"]].add(category)
        images = [(im["id"], str(im["file_name"]), im) for im in doc["images"]]
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"{json_path}: COCO entry without the field {exc}") from None
    base = json_path.parent / cfg.image_dir
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    unlabelled = 0
    for image_id, rel, image in images:
        found = labels.get(image_id, set())
        reason = None
        if unknown.get(image_id):
            ids = ", ".join(map(str, sorted(unknown[image_id], key=str)))
            reason = f"annotation with unknown category_id {ids} (COCO image id {image_id})"
        elif len(found) > 1:
            reason = f"annotated with several categories ({', '.join(sorted(found))}); classification takes one per image"
        elif not found:
            unlabelled += 1
            continue
        elif why := _unusable(base / rel, base, spec.follow_links):
            reason = f"{why} (COCO image id {image_id})"
        if reason:
            skipped.append({"path": display_name(rel), "reason": reason})
            continue
        group = image.get(cfg.group_field) if cfg.group_field else None
        samples.append(
            Sample(
                str((base / rel).resolve()),
                display_name(rel),
                display_name(next(iter(found))),
                None if group in (None, "") else display_name(str(group)),
            )
        )
    return samples, skipped, unlabelled


def plan_copies(samples: list[Sample], spec: DataSpec) -> list[Sample]:
    """Number of offline augmented copies per training sample, per class (copies or target_count)."""
    out = list(samples)
    for label, aug in spec.augment.items():
        idx = [i for i, s in enumerate(samples) if s.label == label and s.split == "train"]
        if not idx:
            continue
        if aug.copies is not None:
            per = [aug.copies] * len(idx)
        else:
            extra = max(0, (aug.target_count or 0) - len(idx))
            base, rest = divmod(extra, len(idx))
            per = [base + (1 if k < rest else 0) for k in range(len(idx))]
        for i, copies in zip(idx, per, strict=True):
            out[i] = replace(samples[i], copies=copies)
    return out


def build_catalog(source: str | Path, spec: DataSpec) -> Catalog:
    """List, split and plan a data source. Deterministic for the same files and spec."""
    source = Path(source)
    notes: list[str] = []
    ignored: list[dict[str, str]] = []
    unlabelled = 0
    if not source.exists():
        raise CatalogError(f"data.source {source} does not exist")
    suffix = source.suffix.lower()
    kind: str = spec.format
    if kind == "auto":
        kind = {".csv": "csv", ".json": "coco"}.get(suffix, "folders")
    if kind in ("csv", "coco"):
        if not source.is_file():
            raise CatalogError(f"data.source {source} is not a file (data.format {kind})")
        read = _from_csv if kind == "csv" else _from_coco
        samples, skipped, unlabelled = read(source, spec, notes)
        explicit = False
    else:
        if not source.is_dir():
            raise CatalogError(
                f"data.source {source} is neither a folder of class folders, a .csv manifest nor COCO .json"
            )
        samples, skipped, ignored = _from_folders(source, spec, notes)
        explicit = any("explicit train/" in n for n in notes)
    samples.sort(key=lambda s: s.rel)
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        found = ", ".join(classes) or "none"
        raise CatalogError(
            f"need at least two classes with images, found {len(classes)} ({found}) in {source}"
        )
    unknown_aug = sorted(set(spec.augment) - set(classes))
    if unknown_aug:
        raise CatalogError(
            f"data.augment names class(es) {', '.join(unknown_aug)} not in the data (classes: {', '.join(classes)})"
        )
    if spec.split.folds and explicit:
        raise CatalogError("data.split.folds needs one pool of images, not train/ and val/ folders")
    if spec.split.folds:
        samples = assign_folds(samples, spec.split)
    elif not explicit:
        samples = split_samples(
            samples, spec.split.validation, spec.split.seed, spec.split.stratify
        )
    samples = carve_select(samples, spec.split)
    if thin := thin_training(samples, spec.split):
        notes.append(f"warning: {thin}")
    samples = plan_copies(samples, spec)
    return Catalog(classes, samples, skipped, notes, unlabelled=unlabelled, ignored=ignored)
