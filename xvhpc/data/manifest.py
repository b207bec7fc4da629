"""manifest.json: what ingest wrote (counts, skipped files, leaks, shard sha256s) and how.

The preprocessing settings are written here once, by ingest, and every later reader (train's
model bundle, evaluate, serve, export) carries this dict unchanged: decoding a new image the
way ingest decoded the training images needs every one of them (``max_image_pixels`` and
``dicom_frames`` included).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ..spec.schema import DataSpec
from .decode import DEFAULT_DECODE_BYTES, DecodeOptions, VideoOptions
from .dedupe import near_duplicates
from .folds import part_of, split_settings
from .sample import Catalog
from .shards import shard_complete

PREPROCESSING_KEYS = (
    "image_size",
    "channels",
    "resize",
    "tile_grid",
    "max_image_pixels",
    "dicom_frames",
    "max_decode_bytes",
    "video",
)


def preprocessing(data: DataSpec) -> dict[str, Any]:
    """The decode settings of a data spec, as manifest.json records them."""
    pre = {key: getattr(data, key) for key in PREPROCESSING_KEYS if key != "video"}
    return {**pre, "video": data.video.model_dump()}


def decode_options(pre: dict[str, Any]) -> DecodeOptions:
    """``DecodeOptions`` from a manifest's (or a bundle's) preprocessing dict."""
    return DecodeOptions(
        size=int(pre["image_size"]),
        channels=int(pre["channels"]),
        max_pixels=int(pre["max_image_pixels"]),
        dicom_frames=pre["dicom_frames"],
        resize=pre["resize"],
        tile_grid=int(pre["tile_grid"]),
        # bundles from before issue 23 lack it: the default budget
        max_decode_bytes=int(pre.get("max_decode_bytes", DEFAULT_DECODE_BYTES)),
        video=VideoOptions(**pre.get("video", {})),  # bundles from before issue 27: defaults
    )


def shard_infos(shard_dir: Path, shards: int, data: DataSpec) -> tuple[list[dict], list[int]]:
    """(info of every complete shard written under ``data``'s split settings, indices of the
    missing, incomplete or stale ones)."""
    infos: list[dict] = []
    missing: list[int] = []
    for i in range(shards):
        info = shard_complete(shard_dir, i, split_settings(data))
        if info:
            infos.append(info)
        else:
            missing.append(i)
    return infos, missing


def _total(infos: list[dict], key: str) -> dict[str, dict[str, int]]:
    """Per split and class counts summed over shards."""
    out: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for info in infos:
        for split, counts in info[key].items():
            part = out.setdefault(split, {})  # "select": the checkpoint-choosing split
            for cls, n in counts.items():
                part[cls] = part.get(cls, 0) + n
    return out


def leaked_hashes(infos: list[dict]) -> list[dict[str, Any]]:
    """Identical original images (same content hash) in different held-out parts: train,
    select and validation splits, and with folds each fold's part (``part_of``), so an image
    held out in one fold and trained on in another is found. Sorted by hash:
    ``{"hash", "parts", "sources"}`` each."""
    seen: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for o in _originals(infos):
        if o.get("hash"):
            seen[o["hash"]].append((part_of(o["split"], o["fold"]), o["source"]))
    return [
        {"hash": h, "parts": sorted({p for p, _ in found}), "sources": [s for _, s in found]}
        for h, found in sorted(seen.items())
        if len({p for p, _ in found}) > 1
    ]


def _originals(infos: list[dict]) -> list[dict]:
    return [o for info in infos for o in info.get("originals", [])]


def fold_counts(originals: list[dict], data: DataSpec) -> dict[str, Any] | None:
    """Original images per fold and class, and patients/groups per fold (None without folds)."""
    if not data.split.folds:
        return None
    per: list[dict[str, int]] = [{} for _ in range(data.split.folds)]
    for o in originals:
        per[o["fold"]][o["label"]] = per[o["fold"]].get(o["label"], 0) + 1
    return {"folds": data.split.folds, "seed": data.split.seed, "per_fold_class": per}


BOX_SKIPPED = "box skipped:"  # a box-level entry: the image itself was used


def build_manifest(infos: list[dict], catalog: Catalog, data: DataSpec) -> dict[str, Any]:
    """manifest.json's content from complete shard infos; ``error`` set above max_bad_fraction."""
    skipped = catalog.skipped + [s for info in infos for s in info["skipped"]]
    inputs = sum(info["inputs"] for info in infos) + len(catalog.skipped)
    # boxes lost from a written image (tiling) are listed, but the file was used
    bad = [s for s in skipped if not s["reason"].startswith(BOX_SKIPPED)]
    bad_fraction = len(bad) / max(inputs, 1)
    leaked = leaked_hashes(infos)
    leaks = [entry["hash"] for entry in leaked]
    pre = preprocessing(data)
    manifest: dict[str, Any] = {
        "classes": catalog.classes,
        "preprocessing": pre,
        # the top-level copies are what readers of older run dirs look for
        "image_size": pre["image_size"],
        "channels": pre["channels"],
        "resize": pre["resize"],
        "inputs": inputs,
        "unlabelled": catalog.unlabelled,
        "counts_before_augmentation": _total(infos, "original_per_split_class"),
        "counts_after_augmentation": _total(infos, "per_split_class"),
        # hidden files are listed too, but not counted against max_bad_fraction
        "skipped": sorted(skipped + catalog.ignored, key=lambda s: s["path"]),
        "bad_fraction": round(bad_fraction, 4),
        "notes": catalog.notes,
        "leaks": {
            # (the name is older than folds: identical images in different splits/folds)
            "identical_images_in_train_and_val": len(leaks),
            "policy": data.leaks,
            "hashes": leaks[:100],
            "examples": leaked[:100],  # which parts and files hold each identical image
            "near_duplicates": near_duplicates(
                [{**o, "part": part_of(o["split"], o["fold"])} for o in _originals(infos)]
            ),
        },
        "folds": fold_counts(_originals(infos), data),
        # with leaks: drop, the val copies of leaked images are excluded at load time
        "exclude_val_hashes": leaks if data.leaks == "drop" else [],
        "shards": [{"file": i["file"], "count": i["count"], "sha256": i["sha256"]} for i in infos],
        # summed over shards (each written by one task): inputs / this = images/s per task
        "ingest_seconds": round(sum(i.get("seconds", 0.0) for i in infos), 3),
    }
    if bad_fraction > data.max_bad_fraction:
        manifest["error"] = (
            f"{len(bad)} of {inputs} files ({bad_fraction:.1%}) could not be used, "
            f"above data.max_bad_fraction {data.max_bad_fraction:.1%}"
        )
    return manifest


def manifest_preprocessing(manifest: dict[str, Any], data: DataSpec) -> dict[str, Any]:
    """The preprocessing dict of a manifest. One written before it was recorded there: the
    spec's settings with the three the manifest held (what the bundle got before)."""
    if "preprocessing" in manifest:
        return manifest["preprocessing"]
    return {**preprocessing(data), **{k: manifest[k] for k in ("image_size", "channels", "resize")}}
