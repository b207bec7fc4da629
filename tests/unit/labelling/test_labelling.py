"""The labelling loop: ``xvhpc predict --format labelstudio|coco`` writes pre-annotations
(least confident first with ``--order uncertainty``); a reviewer's Label Studio export (or the
COCO file CVAT exports) reads back through ingest's catalogs with nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xvhpc.cli import main
from xvhpc.data.catalog import build_catalog
from xvhpc.data.labelstudio import labelstudio_tasks, ordered
from xvhpc.plan.predict import review_flags
from xvhpc.rundir.records import PredictError
from xvhpc.spec.schema import DataSpec
from xvhpc.tasks.detect.catalog import build_detection_catalog
from xvhpc.tasks.detect.labels import reviews as detect_reviews
from xvhpc.tasks.detect.synth import make_detection_dataset


def _export(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports once a reviewer accepted every pre-annotation."""
    for n, task in enumerate(tasks):
        task["id"] = n + 1
        task["annotations"] = [{"id": n + 1, "result": task["predictions"][0]["result"],
                                "was_cancelled": False}]  # fmt: skip
    return tasks


@pytest.fixture(scope="module")
def predicted(trained_run: Path, demo_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelling") / "out"
    argv = ["predict", str(trained_run), "--data", str(demo_data), "--out", str(out)]
    assert main([*argv, "--format", "labelstudio", "--order", "uncertainty"]) == 0
    return out


def test_classify_round_trip_through_label_studio(predicted: Path, demo_data: Path, tmp_path):
    tasks = json.loads((predicted / "labelstudio.json").read_text())
    rows = (predicted / "predictions.csv").read_text().splitlines()[1:]
    assert len(tasks) == len(rows) == len(list(demo_data.rglob("*.*")))
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores), "least confident first"
    first = tasks[0]["predictions"][0]
    assert first["result"][0]["type"] == "choices" and first["model_version"]
    export = _export(tasks)
    old = export[0]["annotations"][0]["result"][0]["value"]["choices"][0]
    new = next(c for c in ("normal", "covid19") if c != old)
    export[0]["annotations"][0]["result"][0]["value"]["choices"] = [new]  # the reviewer's fix
    export[1]["annotations"][0]["was_cancelled"] = True  # skipped by the reviewer: left out
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    catalog = build_catalog(path, DataSpec(source=str(path), coco={"image_dir": str(demo_data)}))
    got = {s.rel: s.label for s in catalog.samples}
    want = {t["data"]["xvhpc_path"]: t["predictions"][0]["result"][0]["value"]["choices"][0]
            for t in tasks[2:]}  # fmt: skip
    assert not catalog.skipped and len(got) == len(tasks) - 1
    assert got[tasks[0]["data"]["xvhpc_path"]] == new
    assert {k: got[k] for k in want} == want


def test_classify_coco_for_cvat_reads_back(predicted: Path, trained_run: Path, demo_data: Path):
    out = predicted.parent / "coco"
    argv = ["predict", str(trained_run), "--data", str(demo_data), "--out", str(out)]
    assert main([*argv, "--format", "coco"]) == 0
    doc = json.loads((out / "coco.json").read_text())
    assert len(doc["images"]) == len(doc["annotations"]) > 0
    catalog = build_catalog(out / "coco.json",
                            DataSpec(source="x.json", coco={"image_dir": str(demo_data)}))  # fmt: skip
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {i["id"]: i["file_name"] for i in doc["images"]}
    assert {s.rel: s.label for s in catalog.samples} == {
        files[a["image_id"]]: names[a["category_id"]] for a in doc["annotations"]
    }


def test_a_task_without_review_files_is_refused_up_front() -> None:
    with pytest.raises(PredictError, match="task segment writes no review files"):
        review_flags({"task": "segment"}, "labelstudio", "input")
    assert review_flags({"task": "detect"}, "coco", "uncertainty") == (
        "--format", "coco", "--order", "uncertainty")  # fmt: skip


def test_heatmaps_for_a_task_without_them_are_refused_up_front() -> None:
    from xvhpc.plan.predict import check_heatmaps

    for task in ("detect", "segment", "action"):
        with pytest.raises(PredictError, match=f"--heatmaps: a model of task {task} draws no"):
            check_heatmaps({"task": task}, True)
        check_heatmaps({"task": task}, False)
    check_heatmaps({"task": "classify"}, True)


def test_detect_boxes_round_trip_within_rounding(tmp_path: Path) -> None:
    """Boxes → rectanglelabels in percent → a reviewer's export → the detection catalog: the
    same boxes in pixels, the edited label changed, images without boxes kept as negatives."""
    coco = make_detection_dataset(tmp_path / "det", images=12, size=64, seed=1)
    truth = json.loads(coco.read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    lines, files = [], {}
    for image in truth["images"]:
        boxes = [{"label": names[a["category_id"]], "confidence": 0.5 + 0.04 * a["id"] % 0.5,
                  "box": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                          a["bbox"][1] + a["bbox"][3]]}
                 for a in truth["annotations"] if a["image_id"] == image["id"]]  # fmt: skip
        lines.append(json.dumps({"path": image["file_name"], "boxes": boxes}))
        files[image["file_name"]] = str(tmp_path / "det" / image["file_name"])
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("\n".join(lines) + "\n")
    reviews, skipped = detect_reviews(predictions, files, list(names.values()))
    assert skipped == 0 and len(reviews) == 12
    first = ordered(reviews, "uncertainty")
    assert [r.uncertainty for r in first] == sorted((r.uncertainty for r in first), reverse=True)
    export = _export(labelstudio_tasks(reviews, "test"))
    edited = next(t for t in export if t["annotations"][0]["result"])
    item = edited["annotations"][0]["result"][0]
    old = item["value"]["rectanglelabels"][0]
    item["value"]["rectanglelabels"] = [next(n for n in names.values() if n != old)]
    path = tmp_path / "det" / "export.json"
    path.write_text(json.dumps(export))
    catalog = build_detection_catalog(path, DataSpec(source=str(path)))
    assert len(catalog.samples) == 12 and not catalog.skipped
    got = {s.rel: sorted(s.target) for s in catalog.samples}
    for image in truth["images"]:
        want = sorted((a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                       a["bbox"][1] + a["bbox"][3])
                      for a in truth["annotations"] if a["image_id"] == image["id"])  # fmt: skip
        boxes = [b[:4] for b in got[image["file_name"]]]
        assert len(boxes) == len(want), image["file_name"]
        for b, w in zip(sorted(boxes), want, strict=True):
            assert max(abs(x - y) for x, y in zip(b, w, strict=True)) < 0.01
    new = item["value"]["rectanglelabels"][0]
    x0 = item["value"]["x"] * item["original_width"] / 100
    fixed = {s.rel: s.target for s in catalog.samples}[edited["data"]["xvhpc_path"]]
    assert [catalog.classes[b[4]] for b in fixed if abs(b[0] - x0) < 0.01] == [new]
