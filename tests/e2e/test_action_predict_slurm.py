"""Batch prediction of an action model over a folder of videos as a real Slurm array (issue 27,
item 4): the merged JSON lines and CSV of segments are byte-identical to a local run of the
same videos in one chunk; a cancelled array task is the only one predicted again."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import predict, tiny_spec, wait_final, xv

pytestmark = pytest.mark.e2e

CHUNK = "3"  # 10 files in chunks of 3: an array of 4 tasks


@pytest.fixture(scope="module")
def action_run(tmp_path_factory) -> Path:
    """A tiny action model (``demo-data --task action``, 8 videos at 32 px; compile, ingest and
    40 iterations of c3d_tiny in-process: a few seconds): its run directory."""
    from xvhpc.cli import main
    from xvhpc.registry import load_task

    work = tmp_path_factory.mktemp("action-model")
    args = argparse.Namespace(out=str(work / "data"), per_class=4, size=32, seed=0, task="action")
    assert load_task("action").synth(args) == 0
    spec = tiny_spec(
        work / "spec.yaml",
        work / "data" / "segments.csv",
        name="action-predict",
        task="action",
        data={"image_size": 32, "channels": 3, "resize": "squash", "shards": 1,
              "split": {"validation": 0.34, "seed": 1}},
        model={"arch": "c3d_tiny", "pretrained": "none"},
        train={"max_iterations": 40, "batch_size": 16, "learning_rate": 0.003,
               "optimizer": "adamw", "val_every": 40, "checkpoint_every": 40},
    )  # fmt: skip
    run = work / "run"
    assert main(["compile", str(spec), "--out", str(run)]) == 0
    assert main(["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]) == 0
    assert main(["train", "--run-dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def videos(action_run: Path) -> Path:
    """The 8 demo videos (half of them in a subfolder), one broken MP4 and a text file."""
    source = action_run.parent / "data" / "videos"
    root = action_run.parent / "to-predict"
    (root / "more").mkdir(parents=True)
    for i, video in enumerate(sorted(source.glob("*.mp4"))):
        shutil.copy(video, root / ("more" if i % 2 else ".") / video.name)
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "notes.txt").write_text("hello")
    return root


def chunk_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "chunks").glob("chunk-*.jsonl"))}


def check_segments(out: Path, videos: Path, classes: list[str]) -> None:
    """Every input has its JSON line, in input order; each readable video its segments
    ``{label, confidence, start, end}`` within the video; the CSV is the same segments."""
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    inputs = sorted(str(p.relative_to(videos)) for p in videos.rglob("*") if p.is_file())
    assert [r["path"] for r in rows] == inputs
    table = list(csv.reader(io.StringIO((out / "predictions.csv").read_text())))
    assert table[0] == ["path", "label", "confidence", "start", "end"]
    flat = []
    for row in rows:
        if not row["path"].endswith(".mp4") or row["path"] == "broken.mp4":
            assert row["skipped"] and row["segments"] == [], row
            continue
        assert "skipped" not in row and row["segments"], row
        for seg in row["segments"]:
            assert set(seg) == {"label", "confidence", "start", "end"}, seg
            assert seg["label"] in classes[1:] and 0 < seg["confidence"] <= 1, seg
            assert 0 <= seg["start"] < seg["end"] <= 6.0 + 1e-6, seg  # the demo's 6 s
            flat.append([row["path"], *(str(seg[k]) for k in ("label", "confidence", "start", "end"))])  # fmt: skip
    assert table[1:] == flat


@pytest.mark.slurm
def test_action_predict_as_a_slurm_array_matches_local(
    slurm_up, action_run: Path, videos: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    predict(action_run, videos, local, "--chunk-size", "100")  # one chunk, here
    out = tmp_path / "slurm"
    predict(action_run, videos, out, "--chunk-size", CHUNK, "--site", "local-slurm")
    job = json.loads((out / "jobs.json").read_text())["steps"]["predict"]["job_id"]
    subprocess.run(["scancel", f"{job}_1"], check=True)  # one task of the array killed
    states = wait_final(out)
    if states["predict"]["state"] == "COMPLETED":
        # it finished before the cancel reached it: lose its output, as a killed task would
        for name in ("predictions.jsonl", "predictions.csv", "summary.json"):
            (out / name).unlink(missing_ok=True)
        for chunk in (out / "chunks").glob("chunk-00001-*"):
            chunk.unlink()
    else:
        assert states["merge"]["state"] != "COMPLETED"  # its dependency can no longer be met
    before = chunk_times(out)
    assert [n[:11] for n in before] == ["chunk-00000", "chunk-00002", "chunk-00003"]
    predict(action_run, videos, out, "--chunk-size", CHUNK, "--site", "local-slurm")
    states = wait_final(out)
    assert {k: v["state"] for k, v in states.items()} == {
        "predict": "COMPLETED",
        "merge": "COMPLETED",
    }
    after = chunk_times(out)
    assert len(after) == 4 and {k: after[k] for k in before} == before
    rerun = json.loads((out / "jobs.json").read_text())["steps"]["predict"]["job_id"]
    assert len(list((out / "logs").glob(f"predict-{rerun}_*.out"))) == 4  # 4 array tasks
    assert xv("logs", str(out), "predict").stdout.count("already done") == 3
    for name in ("predictions.jsonl", "predictions.csv"):
        assert (out / name).read_bytes() == (local / name).read_bytes(), name
    classes = json.loads((action_run / "model" / "meta.json").read_text())["classes"]
    check_segments(out, videos, classes)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["predicted"], summary["chunks"]) == (10, 8, 4)


def test_a_model_failure_fails_the_chunk_not_a_skipped_video(
    action_run: Path, videos: Path
) -> None:
    """A video that cannot be decoded is a skip; the model failing (a GPU out of memory on a
    node) raises, so the array task fails and its rerun predicts the chunk again."""
    import torch

    from xvhpc.models.bundle import load_bundle
    from xvhpc.tasks.action.predict import predict_rows

    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("CUDA out of memory")

    bundle = load_bundle(action_run / "model", "cpu")
    items = [{"path": str(videos / n), "rel": n} for n in ("broken.mp4", "clip000.mp4")]
    text, done, skipped = predict_rows(bundle, items, videos)
    assert (done, skipped) == (1, 1) and "not a readable video" in text
    bundle.model = Broken()
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_rows(bundle, items, videos)
