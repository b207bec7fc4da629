"""One file → its shard records, the task-neutral half: decoding a file safely, the record of
an original (with its hashes) and its seeded augmented copies.

Each task's ``process_sample`` (``tasks/<name>/ingest.py``) builds on these; ingest's worker
processes receive a ``SampleJob`` and return (records, reason).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..spec.schema import DataSpec
from .decode import BadImage, DecodeOptions
from .dedupe import dhash
from .sample import Sample
from .shards import Record, content_hash
from .transforms import augment, prepare


@dataclass(frozen=True)
class SampleJob:
    """What a worker needs to turn one sample into records."""

    sample: Sample
    label: int
    data: DataSpec
    opts: DecodeOptions  # from the manifest's preprocessing dict, built once per shard


def decoded(job: SampleJob, read: Callable = prepare) -> tuple[list, str | None]:
    """``read`` (decode + resize by default) of one file: (frames, None) or ([], reason)."""
    try:
        return read(job.sample.path, job.opts, name=job.sample.rel), None
    except BadImage as exc:
        return [], str(exc)
    except Exception as exc:  # a decoder bug must not stop the other files
        return [], f"decoder error: {type(exc).__name__}: {exc}"


def source_name(
    rel: str, frame: int, frames: int, tile: int, tiles: int, time: float | None = None
) -> str:
    """The record's source: the file, plus ``#frameF`` and ``#tileT`` where there are several;
    a video frame is named by its time instead (``#t=1.500``: ``video.frame_source``)."""
    tail = f"#tile{tile}" if tiles > 1 else ""
    if time is not None:
        return f"{rel}#t={time:.3f}{tail}"
    return rel + (f"#frame{frame}" if frames > 1 else "") + tail


def frame_time(frames: list, index: int) -> float | None:
    """The time (seconds) of frame ``index`` of a decoded video, None for an image's frames."""
    times = getattr(frames, "times", None)
    return None if times is None else float(times[index])


def original_record(job: SampleJob, image: np.ndarray, source: str) -> Record:
    """The record of one decoded (frame, tile) image as it is, with its hashes."""
    return Record(
        image,
        job.label,
        job.sample.split,
        source,
        hash=content_hash(image),
        fold=job.sample.fold,
        dhash=dhash(image),
    )


def augmented_copies(job: SampleJob, image: np.ndarray, source: str) -> list[Record]:
    """The sample's augmented training copies, seeded by (split seed, source, copy)."""
    data = job.data
    copies = []
    for copy in range(job.sample.copies):
        seed = [data.split.seed, zlib.crc32(source.encode()), copy]
        aug_image, ops = augment(image, data.augment[job.sample.label], np.random.default_rng(seed))
        copies.append(
            Record(
                aug_image,
                job.label,
                "train",
                source,
                json.dumps({"copy": copy, "ops": ops}),
                fold=job.sample.fold,  # held out with its source: never trained on in that fold
            )
        )
    return copies
