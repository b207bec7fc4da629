"""Classification ingest: one file → its resized image(s) and augmented copies, each with the
file's class (the task-neutral pieces are ``data/records.py``)."""

from __future__ import annotations

from ...data.records import (
    SampleJob,
    augmented_copies,
    decoded,
    frame_time,
    original_record,
    source_name,
)
from ...data.shards import Record


def process_sample(job: SampleJob) -> tuple[list[Record], str | None]:
    """Decode, resize and augment one file; (records, None) or ([], reason)."""
    frames, reason = decoded(job)
    if reason is not None:
        return [], reason
    records: list[Record] = []
    for f, images in enumerate(frames):
        for t, image in enumerate(images):
            source = source_name(
                job.sample.rel, f, len(frames), t, len(images), frame_time(frames, f)
            )
            # a gray image stays one channel here (hash, augment, transfer from a worker: a
            # third of the work); the shard writer stores it with data.channels channels
            records.append(original_record(job, image, source))
            records.extend(augmented_copies(job, image, source))
    return records, None
