"""Hostile inputs to ``xvhpc predict``, second pass (issue 23, findings 6, 8, 9, 10): a
non-UTF-8 name, a deep path and two paths that flatten alike are all predicted, each with
its own heatmap; a damaged chunk is never merged. Real bundle, real files, the real chunk
and merge steps."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tests.hostile import gradient, png_bytes
from xvhpc.pipeline.predict import chunk_file, merge, run_chunk
from xvhpc.rundir.records import PredictError, PredictJob
from xvhpc.tasks.classify.predict import PREDICTIONS

LOG = logging.getLogger("test")


def _job(out: Path, model: Path, source: Path, rels: list[str], chunk_size: int) -> PredictJob:
    """Freeze a predict job over real files under ``source`` as ``xvhpc predict`` does."""
    inputs = [{"path": os.fsdecode(os.path.join(source, r)), "rel": r} for r in rels]
    job = PredictJob(str(model), str(source), inputs, [], chunk_size, 4, True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict.json").write_text(json.dumps({**job.__dict__, "key": "k"}))
    return job


def _images(source: Path, hostile: bool = True) -> list[str]:
    deep = "/".join(f"dir{i}" for i in range(45))
    rels = ["a/b.png", "a__b.png", "caf\udce9.png", f"deep/{deep}/x.png", "plain.png"]
    rels = rels if hostile else ["a.png", "b.png", "c/d.png", "e.png"]
    for i, rel in enumerate(rels):
        path = os.fsencode(source) + b"/" + os.fsencode(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(png_bytes(np.roll(gradient(48, 48), i * 5)))
    return sorted(rels)


@pytest.mark.timeout(300)
def test_odd_names_deep_paths_and_lookalike_paths_are_all_predicted(
    bundle_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    source, out = tmp_path / "PD", tmp_path / "OUT"
    rels = _images(source)
    _job(out, bundle_dir, source, rels, chunk_size=len(rels))
    assert run_chunk(out, 0, LOG) == 0
    assert merge(out, LOG) == 0
    text = (out / PREDICTIONS).read_text()
    assert "caf\\xe9.png" in text  # escaped as ingest shows it
    maps = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert len(maps) == len(rels)  # one each: a/b.png and a__b.png no longer share one
    assert all(len(name.encode()) <= 255 for name in maps)
    assert "plain.png.png" in maps


def test_heatmap_names_are_unique_and_bounded() -> None:
    from xvhpc.tasks.classify.predict import heatmap_name

    names = ["a/b.jpg", "a__b.jpg", "a_/b", "a/_b", "x/" * 200 + "y.jpg", "caf\udce9.jpg"]
    made = [heatmap_name(n) for n in names]
    assert len(set(made)) == len(made)
    assert all(len(m.encode()) <= 160 for m in made)


@pytest.mark.timeout(300)
def test_a_damaged_chunk_is_not_merged_and_is_predicted_again(
    bundle_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    source, out = tmp_path / "PD", tmp_path / "OUT"
    rels = _images(source, hostile=False)
    _job(out, bundle_dir, source, rels, chunk_size=len(rels))
    run_chunk(out, 0, LOG)
    chunk = chunk_file(out, 0, "k")
    whole = chunk.read_bytes()
    chunk.write_bytes(whole[: len(whole) // 2])  # cut in half, as a full disk or an editor
    with pytest.raises(PredictError, match="damaged"):
        merge(out, LOG)
    assert not (out / PREDICTIONS).exists() and not chunk.exists()
    chunk.write_bytes(whole[: len(whole) // 2])
    assert run_chunk(out, 0, LOG) == 0  # the rerun predicts it again instead of skipping it
    assert merge(out, LOG) == 0
    rows = (out / PREDICTIONS).read_text().splitlines()
    assert len(rows) == 1 + len(rels)


def test_predict_listing_reads_nothing_outside_the_manifests_folder(tmp_path: Path) -> None:
    """Finding 2 for predict: `../`, absolute paths and links out of the CSV's (or COCO's image)
    folder are listed as skipped with the reason, unless data.follow_links: true."""
    import json as _json
    import os as _os

    from xvhpc.plan.predict import list_inputs

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "ok.png").write_bytes(b"x")
    _os.symlink("/etc/passwd", folder / "link.png")
    listing = folder / "list.csv"
    listing.write_text("path\nok.png\n" + "../" * 20 + "etc/passwd\n/proc/self/environ\nlink.png\n")
    found, skipped = list_inputs(listing, {})
    assert [f["rel"] for f in found] == ["ok.png"]
    assert len(skipped) == 3 and all("outside the image folder" in s["reason"] for s in skipped)
    found, _ = list_inputs(listing, {"follow_links": True})
    assert len(found) == 4  # /etc/passwd (twice) and environ: listed, decoding decides later
    coco = folder / "coco.json"
    images = [
        {"id": 1, "file_name": "../ok.png"},
        {"id": 2, "file_name": "/etc/passwd"},
        {"id": 3, "file_name": "in.png"},
    ]
    coco.write_text(_json.dumps({"images": images}))
    (folder / "images").mkdir()
    (folder / "images" / "in.png").write_bytes(b"x")
    found, skipped = list_inputs(coco, {})
    assert [f["rel"] for f in found] == ["in.png"]
    assert {s["path"] for s in skipped} == {"../ok.png", "/etc/passwd"}


def test_predict_data_that_is_a_fifo_or_hostile_json_is_a_clear_error(tmp_path: Path) -> None:
    """Findings 7 and 11 for predict: a FIFO as --data is refused at once (reading it would
    block forever); nested JSON and a CSV field over 128 KiB are one error naming the file."""
    import os as _os

    import pytest as _pytest

    from xvhpc.plan.predict import PredictError, list_inputs

    fifo = tmp_path / "inputs.csv"
    _os.mkfifo(fifo)
    with _pytest.raises(PredictError, match=r"not a regular file \(a FIFO\)"):
        list_inputs(fifo, {})
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with _pytest.raises(PredictError, match="nested too deeply"):
        list_inputs(deep, {})
    wide = tmp_path / "wide.csv"
    wide.write_text("path\n" + "x" * 200_000 + "\n")
    with _pytest.raises(PredictError, match="not a usable CSV"):
        list_inputs(wide, {})


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    """An untrained detection bundle (the drivers only need its weights and meta)."""
    import torch

    from xvhpc.data.manifest import preprocessing
    from xvhpc.models.bundle import save_bundle
    from xvhpc.models.zoo import build_model
    from xvhpc.spec.schema import ExperimentSpec

    spec = ExperimentSpec.model_validate(
        {
            "name": "boxes",
            "task": "detect",
            "data": {"source": "x", "image_size": 64, "resize": "letterbox"},
            "model": {"arch": "fcos_tiny", "pretrained": "none"},
            "deploy": {"threshold": 0.0},
        }
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("detector") / "model"
    model = build_model(spec.model, 2, 64)
    save_bundle(out, model, spec, ["red", "green"], preprocessing(spec.data), 0, {})
    return out


@pytest.mark.timeout(300)
def test_a_detector_s_chunks_are_json_lines_checked_and_merged(
    detector_dir: Path, tmp_path: Path
) -> None:
    """The task-blind predict driver on a detector: a JSON line per file in ``.jsonl`` chunks,
    a damaged chunk removed and predicted again, ``predictions.jsonl`` + box counts merged."""
    source, out = tmp_path / "PD", tmp_path / "OUT"
    rels = _images(source, hostile=False)
    _job(out, detector_dir, source, rels, chunk_size=2)
    for index in range(2):
        assert run_chunk(out, index, LOG) == 0
    chunk = chunk_file(out, 1, "k", ".jsonl")
    whole = chunk.read_text()
    assert [json.loads(line)["path"] for line in whole.splitlines()] == rels[2:]
    chunk.write_text(whole.splitlines()[0] + "\n")  # a line lost
    with pytest.raises(PredictError, match="chunk 1: 1 rows for 2 inputs"):
        merge(out, LOG)
    assert not chunk.exists() and not (out / "predictions.jsonl").exists()
    assert run_chunk(out, 1, LOG) == 0 and merge(out, LOG) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == rels and all("boxes" in r for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predicted"] == len(rels) and "boxes" in summary and "decisions" not in summary
    assert not (out / PREDICTIONS).exists()


def test_a_detector_is_served_as_boxes_and_refused_by_triton(
    detector_dir: Path, tmp_path: Path
) -> None:
    """Serve asks the bundle's task: a detector's description and boxes; Triton export is for
    tasks that list it, so a detector is refused before anything is written."""
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app
    from xvhpc.serve.triton import export_triton
    from xvhpc.util import UserError

    app = create_app(load_bundle(detector_dir))
    assert app.description == "fcos_tiny detector: red, green"
    image = png_bytes(gradient(48, 48))
    reply = TestClient(app).post("/v1/predict", files={"file": ("x.png", image)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["decision"] is None and reply.json()["heatmap"] is None
    assert all(len(p["box"]) == 4 for p in reply.json()["predictions"])
    with pytest.raises(UserError, match="Triton export is for classifiers"):
        export_triton(detector_dir, tmp_path / "tr")
    assert not (tmp_path / "tr").exists()
