"""Action ingest: one video → its clips (sliding windows and clips centred on each segment),
each a record whose image is the clip's middle frame and whose ``clips`` row is the whole
clip (CLIP_FRAMES × size × size × C, uint8, gzip), with its times and the video's segments."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np

from ...data.decode import BadImage, DecodeOptions, decode
from ...data.records import SampleJob, original_record
from ...data.shards import Record, ShardWriter, content_hash
from ...data.transforms import resize
from .clips import centred, clip_indices, label_of, span, windows
from .info import CLIP_FRAMES

WINDOW, CENTRED = "window", "centred"  # the two kinds of clip (localisation uses windows only)


def video_frames(
    source: str | bytes, opts: DecodeOptions, name: str = ""
) -> tuple[np.ndarray, list[float]]:
    """A video's kept frames at the model's size (T×S×S×C uint8) and their times."""
    frames = decode(source, dataclasses.replace(opts, expand_gray=False), name=name)
    times = getattr(frames, "times", None)
    if times is None:
        raise BadImage("not a video (MP4/AVI/MOV/MKV): action detection reads clips of frames")
    small = [resize(f, opts.size, opts.resize, opts.tile_grid)[0] for f in frames]
    return np.stack(small), list(times)


def _record(job: SampleJob, clip: np.ndarray, label: int, info: dict) -> Record:
    base = original_record(job, clip[len(clip) // 2], f"{job.sample.rel}#t={info['start']:.3f}")
    return dataclasses.replace(
        base,
        label=label,
        hash=content_hash(clip),  # the whole clip: still frames shared by videos are no leak
        target=(clip, json.dumps(info)),  # type: ignore[arg-type]  # the writer below reads it
    )


def process_action(job: SampleJob) -> tuple[list[Record], str | None]:
    """Decode one video and cut its clips; (records, None) or ([], reason)."""
    try:
        frames, times = video_frames(job.sample.path, job.opts, job.sample.rel)
    except BadImage as exc:
        return [], str(exc)
    except Exception as exc:  # a decoder bug must not stop the other videos
        return [], f"decoder error: {type(exc).__name__}: {exc}"
    segments = [tuple(s) for s in job.sample.target or ()]
    truth = [[round(s, 6), round(e, 6), int(c)] for s, e, c in segments]
    records = []
    starts = [(WINDOW, f) for f in windows(len(frames))]
    starts += [(CENTRED, f) for f in centred(times, segments)]
    for kind, first in starts:
        clip = frames[clip_indices(first, len(frames))]
        start, end = span(times, first, CLIP_FRAMES)
        info = {"kind": kind, "video": job.sample.rel, "start": start, "end": end,
                "truth": truth, "duration": span(times, len(times) - 1, 1)[1]}  # fmt: skip
        records.append(_record(job, clip, label_of((start, end), segments), info))
    return records, None


class ActionShardWriter(ShardWriter):
    """A classification shard (the middle frames, for thumbnails) plus each clip (``clips``:
    N×CLIP_FRAMES×size×size×C uint8, gzip) and its times and truth (``clip_info``, JSON)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shape = (CLIP_FRAMES, *self.images.shape[1:])
        self.clips = self._file.create_dataset(
            "clips",
            (0, *shape),
            maxshape=(None, *shape),
            dtype="uint8",
            chunks=(1, *shape),
            compression="gzip",
            track_times=False,
        )
        self.clip_info = self._file.create_dataset(
            "clip_info", (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,),
            track_times=False,
        )  # fmt: skip

    def _write_pending(self) -> None:
        pairs: list = [r.target for r in self._pending]  # (clip, info JSON): _record's target
        clips = [self._channels_of(clip) for clip, _ in pairs]
        infos = [info for _, info in pairs]
        start = self.count
        super()._write_pending()
        if clips:
            self.clips.resize(start + len(clips), axis=0)
            self.clips[start : start + len(clips)] = np.stack(clips)
            self.clip_info.resize(start + len(infos), axis=0)
            self.clip_info[start : start + len(infos)] = infos

    def _channels_of(self, clip: np.ndarray) -> np.ndarray:
        channels = self.images.shape[3]
        return clip if clip.shape[3] == channels else np.repeat(clip, channels, axis=3)
