"""Evaluate on real runs: per-image predictions, metrics with intervals and provenance, the stored
operating point and temperature applied by evaluate, serve and export, augmented copies kept out
of validation, the real chest X-rays, the leaderboard (the statistics: tests/unit/stats and
tests/unit/tasks/classify/test_metrics.py)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import SHARED_DATA, tiny_spec, xv
from xvhpc.spec import ExperimentSpec
from xvhpc.stats.decision import read_decision
from xvhpc.tasks.classify.metrics import model_details

CLASSES = ["a", "b", "c"]


# ----- the real pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decided_run(trained_run: Path, tmp_path_factory) -> Path:
    """A copy of the shared trained run, re-evaluated with temperature scaling and an
    operating point (the shared run itself is left as it is)."""
    run = tmp_path_factory.mktemp("decided") / "run"
    shutil.copytree(trained_run, run)
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["evaluate"].update(
        {
            "calibrate": "temperature",
            "operating_point": {"positive": "covid19", "min_sensitivity": 0.9},
        }
    )
    (run / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    xv("evaluate", "--run-dir", str(run), "--all")
    xv("report", "--run-dir", str(run))
    return run


def read_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_predictions_csv_has_every_validation_image(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "eval" / "0" / "metrics.json").read_text())
    rows = read_rows(trained_run / "eval" / "0" / "predictions.csv")
    classes = metrics["classes"]
    assert len(rows) == metrics["samples"] == 12
    assert list(rows[0])[:3] == ["path", "group", "true"]
    assert {f"p_{c}" for c in classes} | {"predicted", "correct"} <= set(rows[0])
    for r in rows:
        p = [float(r[f"p_{c}"]) for c in classes]
        assert abs(sum(p) - 1) < 1e-4 and r["predicted"] == classes[int(np.argmax(p))]
        assert r["correct"] == str(int(r["predicted"] == r["true"]))
        assert r["path"].split("/")[0] == r["true"]  # the class folder the image came from
    accuracy = np.mean([r["correct"] == "1" for r in rows])
    assert np.isclose(accuracy, metrics["accuracy"]["value"])


def test_metrics_json_holds_intervals_and_provenance(trained_run: Path) -> None:
    m = json.loads((trained_run / "eval" / "0" / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        assert set(m[key]) == {"value", "ci_low", "ci_high"}
    for per in m["per_class"].values():
        assert {"value", "ci_low", "ci_high"} == set(per["recall"])
    assert m["bootstrap"]["resamples"] >= 1000 and m["bootstrap"]["unit"] == "image"
    assert len(m["warnings"]) == 4  # 3 validation images per class
    prov = m["provenance"]
    assert prov["software"]["torch"] and prov["software"]["python"] and prov["spec_hash"]
    assert prov["site"] == "local" and prov["seeds"]["split"] == 1
    board = json.loads((trained_run / "eval" / "leaderboard.json").read_text())
    assert isinstance(board["rows"][0]["accuracy"], float)  # what `xvhpc status` prints
    assert (
        json.loads((trained_run / "model" / "decision.json").read_text())["operating_point"] is None
    )


def test_report_shows_intervals_warnings_and_predictions(trained_run: Path) -> None:
    text = (trained_run / "report.html").read_text()
    assert "95 % percentile bootstrap" in text and "has only 3 evaluated image" in text
    assert "eval/0/predictions.csv" in text and "Provenance" in text
    assert "reliability diagram" in text and "ROC curves" in text
    assert "Selection bias" in text  # the checkpoint was chosen on the split it is measured on


def test_operating_point_and_temperature_stored_with_the_model(decided_run: Path) -> None:
    m = json.loads((decided_run / "eval" / "0" / "metrics.json").read_text())
    op = m["operating_point"]
    rows = read_rows(decided_run / "eval" / "0" / "predictions.csv")
    positive = [r for r in rows if r["true"] == "covid19"]
    reached = np.mean([r["decision"] == "covid19" for r in positive])
    assert reached >= 0.9 and np.isclose(reached, op["sensitivity"]["value"])
    rule = read_decision(decided_run / "model", m["classes"])
    assert rule["operating_point"]["threshold"] == op["threshold"]
    assert (
        rule["temperature"] == m["calibration"]["temperature"]
        and rule["calibrate"] == "temperature"
    )
    assert rule["provenance"]["software"]["torch"]
    text = (decided_run / "report.html").read_text()
    assert "Operating point" in text and "after temperature scaling" in text


def test_new_data_is_measured_with_the_stored_rule_not_refitted(
    decided_run: Path, demo_data: Path
) -> None:
    xv("evaluate", "--run-dir", str(decided_run), "--data", str(demo_data))
    m = json.loads((decided_run / "eval" / "0" / f"metrics-{demo_data.name}.json").read_text())
    rule = read_decision(decided_run / "model")
    op = m["operating_point"]
    assert (
        op["threshold"] == rule["operating_point"]["threshold"]
        and "decision.json" in op["fitted_on"]
    )
    assert m["calibration"]["temperature"] == rule["temperature"]
    rows = read_rows(decided_run / "eval" / "0" / f"predictions-{demo_data.name}.csv")
    positive = [r for r in rows if r["true"] == "covid19"]
    assert len(rows) == 48 and np.isclose(
        np.mean([r["decision"] == "covid19" for r in positive]), op["sensitivity"]["value"]
    )


def test_serve_applies_the_operating_point(decided_run: Path) -> None:
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    model = decided_run / "model"
    bundle = load_bundle(model)
    rows = read_rows(decided_run / "eval" / "0" / "predictions.csv")
    shard_image = _validation_png(decided_run, rows[0])

    def ask(rule: dict | None) -> dict:
        app = create_app(bundle, decision=rule)
        with TestClient(app) as client:
            r = client.post("/v1/predict", files={"file": ("x.png", shard_image, "image/png")})
        assert r.status_code == 200, r.text
        return r.json()

    stored = read_decision(model, bundle.classes)
    body = ask(stored)
    probs = {p["label"]: p["confidence"] for p in body["predictions"]}
    expected = "covid19" if probs["covid19"] >= stored["operating_point"]["threshold"] else None
    assert body["decision"] == (
        expected or max((c for c in probs if c != "covid19"), key=probs.get)
    )
    always = {**stored, "operating_point": {**stored["operating_point"], "threshold": 0.0}}
    never = {**stored, "operating_point": {**stored["operating_point"], "threshold": 1.5}}
    assert ask(always)["decision"] == "covid19"
    assert ask(never)["decision"] != "covid19"
    plain = ask(None)
    assert plain["decision"] == plain["predictions"][0]["label"]
    # `xvhpc serve RUN_DIR` reads the stored rule: its /v1/model says so
    app = create_app(bundle, decision=stored)
    with TestClient(app) as client:
        assert "covid19 when P(covid19)" in client.get("/v1/model").json()["decision_rule"]


def _validation_png(run: Path, row: dict) -> bytes:
    import h5py
    from PIL import Image

    with h5py.File(run / "shards" / row["shard"], "r") as h5:
        image = np.asarray(h5["images"][int(row["row"])])
    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def test_export_sidecar_carries_the_decision_rule(decided_run: Path, tmp_path: Path) -> None:
    from xvhpc.serve.export import export

    path = export(decided_run, "torchscript", tmp_path / "model.pt")
    sidecar = json.loads((tmp_path / "model.pt.json").read_text())
    assert path.exists() and sidecar["decision"]["operating_point"]["positive"] == "covid19"
    assert sidecar["decision"]["temperature"] > 0


def test_unknown_operating_point_class_is_a_clear_error(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["evaluate"]["operating_point"] = {"positive": "covid", "min_sensitivity": 0.9}
    (run / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = xv("evaluate", "--run-dir", str(run), "--all", check=False)
    assert proc.returncode == 2 and "'covid' is not a class of the model" in proc.stderr


# ----- item 8: augmented copies stay in training ---------------------------------------------------


def test_augmented_copies_never_reach_validation(tmp_path: Path, demo_data: Path) -> None:
    import h5py

    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        data={"augment": {"covid19": {"copies": 3, "hflip": True}, "normal": {"target_count": 20}}},
    )
    run = tmp_path / "run"
    xv("compile", str(spec), "--site", "local", "--out", str(run))
    xv("ingest", "--run-dir", str(run), "--shard", "all")
    xv("ingest", "--run-dir", str(run), "--merge")
    val_sources, train_augmented = set(), set()
    for shard in sorted((run / "shards").glob("*.h5")):
        with h5py.File(shard, "r") as h5:
            for split, source, ops in zip(
                h5["split"][:], h5["source"][:], h5["ops"][:], strict=True
            ):
                source, ops = source.decode(), ops.decode()
                if split == 1:
                    assert ops == "", f"augmented copy of {source} in validation"
                    val_sources.add(source)
                elif ops:
                    train_augmented.add(source)
    assert train_augmented and val_sources and not (train_augmented & val_sources)


# ----- the real chest X-rays -----------------------------------------------------------------------

CXR = SHARED_DATA / "cxr-figure1" / "metadata.csv"


@pytest.mark.skipif(not CXR.exists(), reason="shared/data/cxr-figure1 not present")
def test_real_xrays_resample_patients() -> None:
    """The real figure-1 metadata through the CSV path: groups are its patient ids, the
    bootstrap resamples patients, and the rare classes are flagged."""
    from xvhpc.data.catalog import build_catalog
    from xvhpc.spec.schema import DataSpec

    data = DataSpec.model_validate(
        {
            "source": str(CXR),
            "csv": {
                "path_pattern": "images/{patientid}.*",
                "label_column": "finding",
                "group_column": "patientid",
            },
        }
    )
    samples = build_catalog(CXR, data).samples
    classes = sorted({s.label for s in samples})
    labels = np.array([classes.index(s.label) for s in samples])
    probs = np.full((len(labels), len(classes)), 0.2)
    probs[np.arange(len(labels)), labels] = 0.6  # a perfect ranking
    d = model_details(labels, probs, classes, [s.group for s in samples])
    assert d["bootstrap"]["unit"] == "patient/group"
    assert d["groups"] == len({s.group for s in samples}) and d["samples"] == len(samples)
    assert d["accuracy"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    small = [c for c in classes if (labels == classes.index(c)).sum() < 10]
    assert small and len(d["warnings"]) == len(small)
    assert all(any(f"class {c} has only" in w for w in d["warnings"]) for c in small)


def test_validation_records_get_their_patient_from_the_catalog() -> None:
    """Shard records name their file (frames/tiles suffixed); evaluate maps each to its CSV
    group, and files without a group become their own group."""
    import logging
    from types import SimpleNamespace

    from xvhpc.evaluation import image_of, split_groups

    assert image_of("images/a#b.png#frame2#tile0") == "images/a#b.png"
    assert image_of("images/x.png") == "images/x.png"
    if not CXR.exists():
        pytest.skip("shared/data/cxr-figure1 not present")
    spec = ExperimentSpec.model_validate(
        {
            "name": "cxr",
            "data": {
                "source": str(CXR),
                "csv": {
                    "path_pattern": "images/{patientid}.*",
                    "label_column": "finding",
                    "group_column": "patientid",
                },
            },
        }
    )
    run = SimpleNamespace(plan={"data_source": str(CXR)}, spec=spec)
    paths = ["images/COVID-00018.jpg#tile1", "images/COVID-00039c.jpg", "images/not-listed.jpg"]
    groups, unit = split_groups(run, paths, logging.getLogger("test"))
    assert unit == "group"
    assert groups == ["COVID-00018", "COVID-00039c", "image:images/not-listed.jpg"]


def test_a_failed_sweep_point_is_listed_and_the_others_are_ranked(
    tmp_path: Path, demo_data: Path
) -> None:
    """Evaluate runs after every point ended (afterany/ended(), issue 22 N10): a point with no
    model is listed with its cause and the finished one still makes the leaderboard and the
    published model; evaluate succeeds so that the report follows."""
    sweep = {"method": "grid", "parameters": {"train.learning_rate": [0.01, 0.02]}}
    spec = tiny_spec(tmp_path / "spec.yaml", demo_data, sweep=sweep, train={"max_iterations": 4})
    run = tmp_path / "run"
    xv("compile", str(spec), "--out", str(run), cwd=tmp_path)
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge")
    xv("train", "--run-dir", str(run), "--point", "0")  # point 1 never ran (its job failed)
    proc = xv("evaluate", "--run-dir", str(run), "--all")
    assert "point 1 not scored: training never started" in proc.stderr
    board = json.loads((run / "eval" / "leaderboard.json").read_text())
    assert [r["point"] for r in board["rows"]] == [0]
    assert [(f["point"], f["cause"].split(" (")[0]) for f in board["failed"]] == [
        (1, "training never started")
    ]
    assert (run / "model" / "meta.json").exists()
    # a point that stopped half-way (requeue limit, walltime) has a bundle from its best
    # validation so far: it is listed, never ranked or published
    shutil.copytree(run / "train" / "0" / "model", run / "train" / "1" / "model")
    progress = {"state": "checkpointed", "iteration": 2, "max_iterations": 4}
    (run / "train" / "1" / "progress.json").write_text(json.dumps(progress))
    proc = xv("evaluate", "--run-dir", str(run), "--all")
    board = json.loads((run / "eval" / "leaderboard.json").read_text())
    scored = [r["point"] for r in board["rows"] if r["accuracy"] is not None]
    assert scored == [0] and board["rows"][-1]["state"] == "checkpointed"  # listed, no figures
    assert [f["point"] for f in board["failed"]] == [1]
    assert "did not finish (checkpointed at iteration 2 of 4)" in board["failed"][0]["cause"]


def _figure(v: float) -> dict:
    return {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}


def test_the_leaderboard_ranks_any_task_by_its_rank_by(tmp_path: Path) -> None:
    """The task-blind leaderboard: a detection sweep ranks by evaluate.rank_by (map50 here, not
    the default map), publishes the best point's bundle, and lists a point whose training
    failed, with its row and state, as for classifiers."""
    from xvhpc.evaluation import failed_points, leaderboard
    from xvhpc.rundir.run import RunDir

    rates = [0.1, 0.01, 0.001]
    spec = {
        "name": "shapes",
        "task": "detect",
        "data": {"source": str(tmp_path / "ann.json"), "image_size": 64},
        "model": {"arch": "fcos_tiny", "pretrained": "none"},
        "sweep": {"parameters": {"train.learning_rate": rates}},
        "evaluate": {"rank_by": "map50"},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    points = [{"train.learning_rate": r} for r in rates]
    plan = {"points": points, "data_source": spec["data"]["source"], "site": "local"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    for p, state in enumerate(["done", "done", "failed"]):
        (tmp_path / "train" / str(p) / "model").mkdir(parents=True)
        progress = {"state": state, "iteration": 3, "max_iterations": 10}
        (tmp_path / "train" / str(p) / "progress.json").write_text(json.dumps(progress))
        if state == "done":
            (tmp_path / "train" / str(p) / "model" / "weights.pt").write_text(f"point {p}")
    run = RunDir.open(tmp_path)
    results = {
        0: {"params": points[0], "map": _figure(0.6), "map50": _figure(0.7)},
        1: {"params": points[1], "map": _figure(0.7), "map50": _figure(0.6)},
    }
    failed = failed_points(run, [0, 1, 2], results)
    rows = leaderboard(run, results, failed)
    assert [r["point"] for r in rows] == [0, 1, 2]  # by mAP@.5; the failed point last
    assert rows[0]["map50"] == 0.7 and rows[0]["ci"]["map"] == [0.5, 0.7]
    assert rows[2]["map50"] is None and rows[2]["state"] == "failed"
    board = json.loads((tmp_path / "eval" / "leaderboard.json").read_text())
    assert board["rank_by"] == "map50" and [f["point"] for f in board["failed"]] == [2]
    assert "training ended failed at iteration 3" in board["failed"][0]["cause"]
    assert (tmp_path / "model" / "weights.pt").read_text() == "point 0"
