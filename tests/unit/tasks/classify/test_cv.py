"""Group k-fold cross-validation (issue 12 items 5, 7, 8): folds, the checkpoint-selection
split, which records train/choose/score each point, pooled out-of-fold figures, near-duplicates,
and points × folds compiled as array tasks (packed on Summit)."""

from __future__ import annotations

import csv
import json
import shutil
import socket
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from tests.conftest import tiny_spec, xv
from xvhpc.data.catalog import build_catalog
from xvhpc.data.dedupe import dhash, near_duplicates
from xvhpc.data.folds import assign_folds, carve_select
from xvhpc.data.sample import Sample
from xvhpc.evaluation import published_metrics
from xvhpc.rundir import Layout
from xvhpc.spec import SpecError, load_spec
from xvhpc.spec.points import FINAL_KEY, FOLD_KEY, CvPoint, cv_points
from xvhpc.spec.schema import DataSpec, SplitSpec
from xvhpc.tasks.classify.report import crossval_section


def patients(n_groups: int = 30, seed: int = 0) -> list[Sample]:
    """1–3 images per patient, one class per patient, classes unbalanced."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_groups):
        label = ["covid", "normal", "viral"][g % 5 % 3]
        for i in range(int(rng.integers(1, 4))):
            out.append(Sample(f"/x/{g}-{i}.png", f"{g}-{i}.png", label, group=f"p{g}"))
    return out


def test_folds_keep_patients_whole_are_stratified_and_seeded() -> None:
    samples = patients()
    split = SplitSpec(folds=5, seed=3)
    folded = assign_folds(samples, split)
    fold_of = defaultdict(set)
    for s in folded:
        fold_of[s.group].add(s.fold)
    assert all(len(f) == 1 for f in fold_of.values()), "a patient in two folds"
    assert sorted({s.fold for s in folded}) == [0, 1, 2, 3, 4]
    for label in {s.label for s in samples}:
        per = Counter(s.fold for s in folded if s.label == label)
        assert max(per.values()) - min(per.get(k, 0) for k in range(5)) <= 3, (label, per)
    assert folded == assign_folds(samples, split)
    assert folded != assign_folds(samples, SplitSpec(folds=5, seed=4))


def test_select_split_takes_whole_training_patients_and_gets_no_copies() -> None:
    split = SplitSpec(folds=5, seed=3, select=0.25)
    carved = carve_select(assign_folds(patients(), split), split)
    chosen = {s.group for s in carved if s.split == "select"}
    trained = {s.group for s in carved if s.split == "train"}
    assert chosen and trained and not chosen & trained
    data = DataSpec(source="/x", augment={"covid": {"copies": 2}})
    from xvhpc.data.catalog import plan_copies

    copies = plan_copies(carved, data)
    assert all(s.copies == 0 for s in copies if s.split == "select")
    assert any(s.copies for s in copies if s.split == "train")


def test_split_spec_errors_name_file_line_and_key(tmp_path: Path, demo_data: Path) -> None:
    for split, message in (
        ({"folds": 1}, "data.split.folds"),
        ({"folds": 21}, "data.split.folds"),
        ({"fold": 2}, "data.split"),
        ({"folds": 3, "fold": 3}, "data.split"),
        ({"select": 1.5}, "data.split.select"),
        ({"final": True}, "data.split"),
        ({"folds": 3, "final": True}, "data.split.final"),
    ):
        path = tiny_spec(tmp_path / "spec.yaml", demo_data, data={"split": split})
        with pytest.raises(SpecError) as info:
            load_spec(path)
        text = str(info.value)
        assert f"{path}:" in text and message in text, text
    for split, train, key in (
        ({"validation": 0.25}, {"final_fit": True}, "train.final_fit"),
        ({"folds": 3}, {"final_fit": True, "early_stop": {"patience": 2}}, "train.early_stop"),
    ):
        path = tiny_spec(tmp_path / "fit.yaml", demo_data, data={"split": split}, train=train)
        with pytest.raises(SpecError) as info:
            load_spec(path)
        line = next(
            i for i, x in enumerate(path.read_text().splitlines(), 1) if key.split(".")[1] in x
        )
        assert f"{path}:{line}" in str(info.value) and key in str(info.value), str(info.value)
    study = tiny_spec(
        tmp_path / "study.yaml",
        demo_data,
        data={"split": {"folds": 3}},
        sweep={"method": "tpe", "trials": 4, "parameters": {"train.learning_rate": [0.1, 0.01]}},
    )
    proc = xv("compile", str(study), "--site", "local", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode != 0 and "data.split.folds" in proc.stderr, proc.stderr


@pytest.mark.parametrize("final_fit", [False, True])
def test_points_times_folds_compile_to_an_array_and_a_packed_step(
    tmp_path: Path, demo_data: Path, final_fit: bool
) -> None:
    """With train.final_fit, one final fit per sweep point follows the fold points (whose
    numbering is unchanged), in the same array / packed waves."""
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        data={"split": {"folds": 3}},
        train={"final_fit": final_fit},
        sweep={"parameters": {"train.learning_rate": [0.1, 0.01]}, "max_concurrent": 2},
        resources={"nodes": 1, "gpus_per_node": 1, "walltime": "00:20:00", "account": "abc123"},
    )
    slurm, summit = tmp_path / "slurm", tmp_path / "summit"
    xv("compile", str(spec), "--site", "local-slurm", "--out", str(slurm))
    xv("compile", str(spec), "--site", "summit", "--out", str(summit))
    points = json.loads((slurm / "plan.json").read_text())["points"]
    finals = [(lr, None, True) for lr in (0.1, 0.01)] if final_fit else []
    assert [
        (p["train.learning_rate"], p.get(FOLD_KEY), p.get(FINAL_KEY, False)) for p in points
    ] == [(lr, k, False) for lr in (0.1, 0.01) for k in range(3)] + finals
    assert cv_points(points) == [
        CvPoint([0, 1, 2], 6 if final_fit else None),
        CvPoint([3, 4, 5], 7 if final_fit else None),
    ]
    n = len(points)
    assert f"#SBATCH --array=0-{n - 1}%2" in (slurm / "scripts" / "train.sbatch").read_text()
    packed = (summit / "scripts" / "train.lsf").read_text()
    assert f"{n} sweep points packed: 2 at a time" in packed and "jsrun" in packed


def grouped_csv(tmp_path: Path, demo_data: Path) -> Path:
    """The demo images as a CSV with patients of two images each (same class). The images are
    copied beside the CSV: a manifest reads nothing outside its own folder (data.follow_links)."""
    images = tmp_path / "images"
    shutil.copytree(demo_data, images, dirs_exist_ok=True)
    files = sorted(p for p in images.rglob("*") if p.is_file() and p.parent != images)
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient"])
        for i, f in enumerate(files):
            writer.writerow(
                [str(f.relative_to(tmp_path)), f.parent.name, f"{f.parent.name}-{i // 2}"]
            )
    return path


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, demo_data: Path) -> Path:
    """A compiled, ingested 3-fold run with a select split and augmented copies (no training)."""
    tmp = tmp_path_factory.mktemp("cv")
    spec = tiny_spec(
        tmp / "spec.yaml",
        grouped_csv(tmp, demo_data),
        data={
            "csv": {"group_column": "patient"},
            "split": {"folds": 3, "select": 0.2, "seed": 1},
            "augment": {"covid19": {"copies": 2, "hflip": True}},
        },
    )
    run = tmp / "run"
    xv("compile", str(spec), "--site", "local", "--out", str(run))
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge")
    return run


def records(run: Path, index) -> list[tuple[str, bool]]:
    """(source, is augmented copy) of every record of an index."""
    import h5py

    out = []
    for s, row in zip(index.shard.tolist(), index.row.tolist(), strict=True):
        with h5py.File(index.files[s], "r") as h5:
            out.append((h5["source"][row].decode(), bool(h5["ops"][row])))
    return out


def test_each_fold_trains_chooses_and_scores_on_disjoint_patients(cv_run: Path) -> None:
    """Out-of-fold scoring covers every original once; no fold trains on a held-out image,
    its augmented copy, or its patient; the checkpoint is chosen on neither."""
    from xvhpc.data.roles import role_index
    from xvhpc.rundir.run import RunDir

    run = RunDir.open(cv_run)
    catalog = build_catalog(run.plan["data_source"], run.spec.data)
    patient = {s.rel: s.group for s in catalog.samples}
    scored: list[str] = []
    for k in range(3):
        split = run.point(k).data.split
        assert split.fold == k
        roles = {
            r: records(cv_run, role_index(cv_run, split, r)) for r in ("train", "select", "score")
        }
        held = {src for src, _ in roles["score"]}
        assert not any(copy for _, copy in roles["score"]), "an augmented copy is scored"
        assert any(copy for _, copy in roles["train"])
        for role in ("train", "select"):
            sources = {src for src, _ in roles[role]}
            assert not sources & held, f"fold {k}: {role} holds a held-out image or its copy"
            assert not {patient[s] for s in sources} & {patient[s] for s in held}
        assert roles["select"] and not {src for src, _ in roles["select"]} & {
            src for src, _ in roles["train"]
        }
        scored += sorted(held)
    assert sorted(scored) == sorted(s.rel for s in catalog.samples), "not each image once"
    manifest = json.loads((cv_run / "manifest.json").read_text())
    per_fold = [sum(c.values()) for c in manifest["folds"]["per_fold_class"]]
    assert sum(per_fold) == len(catalog.samples)
    assert "near_duplicates" in manifest["leaks"]


def test_training_validates_on_the_select_split_only(cv_run: Path) -> None:
    """A real fold's training run: its validation rounds see the select records of the other
    folds, never the held-out fold it is scored on."""
    from xvhpc.data.roles import role_index
    from xvhpc.rundir.run import RunDir

    run = RunDir.open(cv_run)
    split = run.point(1).data.split
    xv("train", "--run-dir", str(cv_run), "--point", "1", "--max-iterations", "2")
    lines = [
        json.loads(x) for x in (cv_run / "train" / "1" / "metrics.jsonl").read_text().splitlines()
    ]
    seen = {x["val_samples"] for x in lines if "val_samples" in x}
    assert seen == {len(role_index(cv_run, split, "select"))}
    assert seen != {len(role_index(cv_run, split, "score"))}
    meta = json.loads((cv_run / "train" / "1" / "model" / "meta.json").read_text())
    assert meta["spec"]["data"]["split"]["fold"] == 1
    rank = json.loads((cv_run / "train" / "1" / "ranks" / "rank-0.json").read_text())
    assert rank["host"] == socket.gethostname() and rank["device"] and rank["gpu"]


def fold_sizes(run: Path) -> list[int]:
    """Original images per fold, as the manifest counts them."""
    manifest = json.loads((run / "manifest.json").read_text())
    return [sum(c.values()) for c in manifest["folds"]["per_fold_class"]]


def fake_folds(run, members: list[int], right: bool = False) -> tuple[dict, dict]:
    """Per-fold predictions (as many images per fold as the manifest's folds hold, two per
    patient) and their metrics as evaluate_point keeps them: random, or all right; each fold's
    model folder made."""
    from xvhpc.tasks.classify.metrics import Options, model_details

    rng = np.random.default_rng(members[0])
    classes = ["bacterial", "covid19", "normal", "viral"]
    found, results = {}, {}
    for k, n in zip(members, fold_sizes(run.root), strict=True):
        labels = rng.integers(0, 4, n)
        probs = rng.dirichlet(np.ones(4), n)
        probs[np.arange(n), labels] += 10 * right + rng.random(n)
        probs /= probs.sum(1, keepdims=True)
        paths = [f"f{k}/img{i}.png" for i in range(n)]
        groups = [f"f{k}-patient{i // 2}" for i in range(n)]  # two images per patient
        found[k] = {"labels": labels, "probs": probs, "paths": paths, "groups": groups,
                    "shard": [""] * n, "row": [""] * n}  # fmt: skip
        results[k] = {**model_details(labels, probs, classes, groups, Options(resamples=1000),
                                      "group"), "params": run.plan["points"][k]}  # fmt: skip
        (run.root / "train" / str(k) / "model").mkdir(parents=True, exist_ok=True)
    return found, results


def test_pooled_figures_come_from_the_pooled_predictions(cv_run: Path) -> None:
    """Pooling per-fold predictions: the pooled figures are those of the concatenated
    predictions (not a mean of the folds'), the spread lists each fold's, every record once."""
    import logging

    from xvhpc.rundir.run import RunDir
    from xvhpc.tasks.classify import crossval
    from xvhpc.tasks.classify.metrics import Options

    run = RunDir.open(cv_run)
    found, results = fake_folds(run, [0, 1, 2])
    pooled = crossval.pool(run, results, found, Options(resamples=1000), logging.getLogger("t"))
    m = pooled[0]
    labels = np.concatenate([found[k]["labels"] for k in range(3)])
    pred = np.concatenate([found[k]["probs"] for k in range(3)]).argmax(1)
    assert np.isclose(m["accuracy"]["value"], accuracy_score(labels, pred))
    assert np.isclose(m["balanced_accuracy"]["value"], balanced_accuracy_score(labels, pred))
    assert m["accuracy"]["ci_low"] <= m["accuracy"]["value"] <= m["accuracy"]["ci_high"]
    assert m["fold_spread"]["accuracy"]["per_fold"] == [
        results[k]["accuracy"]["value"] for k in range(3)
    ]
    sizes = fold_sizes(cv_run)
    assert m["coverage"] == {"records": sum(sizes), "scored_more_than_once": []}
    assert m["bootstrap"]["unit"] == "patient/group"
    assert m["groups"] == sum((n + 1) // 2 for n in sizes)
    assert not m["selection"]["optimistic"] and "select" in m["selection"]["chose"]
    rows = list(csv.DictReader((Layout(cv_run).pooled_dir(0) / "predictions.csv").open()))
    assert len(rows) == sum(sizes)
    assert Counter(r["fold"] for r in rows) == {str(k): n for k, n in enumerate(sizes)}
    manifest = json.loads((cv_run / "manifest.json").read_text())
    section = crossval_section(run, manifest)
    spread = m["fold_spread"]["accuracy"]
    assert "Cross-validation: 3 group folds" in section and "mean ± sd across folds" in section
    assert f"{spread['mean']:.4f} ± {spread['sd']:.4f}" in section
    assert (
        "Deployed model: fold 0&#x27;s model" in section and "eval/cv-0/predictions.csv" in section
    )
    assert "which the choice never saw" in section and "Selection bias" not in section
    assert published_metrics(run, 0)["decision_rule"] == m["decision_rule"]


@pytest.fixture(scope="module")
def final_run(cv_run: Path, tmp_path_factory) -> Path:
    """cv_run's spec with train.final_fit and two sweep points, compiled anew; cv_run's ingest
    output is copied in (the same data section makes the same shards) rather than redone."""
    tmp = tmp_path_factory.mktemp("final")
    spec = yaml.safe_load((cv_run / "spec.yaml").read_text())
    spec["train"]["final_fit"] = True
    spec["sweep"] = {"parameters": {"train.learning_rate": [0.1, 0.01]}}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    run = tmp / "run"
    xv("compile", str(tmp / "spec.yaml"), "--site", "local", "--out", str(run))
    shutil.copy(cv_run / "manifest.json", run / "manifest.json")
    shutil.copytree(cv_run / "shards", run / "shards")
    return run


def test_final_fit_trains_on_every_fold_and_nothing_scores_it(final_run: Path) -> None:
    """A final fit trains on the union of its folds' training records (augmented copies
    included), chooses on every fold's select records, holds no record out, and evaluate
    refuses to score it on data it trained on."""
    import logging

    from xvhpc.data.roles import role_index
    from xvhpc.evaluation import EvaluateError, candidates
    from xvhpc.rundir.run import RunDir
    from xvhpc.tasks.classify.evaluate import evaluate_point

    run = RunDir.open(final_run)
    group = cv_points(run.plan["points"])[1]
    split = run.point(group.final).data.split
    assert split.final and split.fold is None

    def rows(split: SplitSpec, role) -> set[tuple[int, int]]:
        index = role_index(final_run, split, role)
        return set(zip(index.shard.tolist(), index.row.tolist(), strict=True))

    folds = [run.point(k).data.split for k in group.folds]
    trained = rows(split, "train")
    assert trained == set().union(*(rows(f, "train") for f in folds))
    assert rows(split, "select") == set().union(*(rows(f, "select") for f in folds))
    assert not rows(split, "score") and not trained & rows(split, "select")
    held_out = set().union(*(rows(f, "score") for f in folds))  # every original image
    assert held_out <= trained | rows(split, "select"), "a record held out of the final fit"
    assert candidates(run) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(EvaluateError, match="final fit on all folds"):
        evaluate_point(run, group.final, None, logging.getLogger("t"))


def test_a_final_fit_with_nothing_to_choose_on_keeps_its_last_weights(final_run: Path) -> None:
    """Without a select split no record chooses a final fit's checkpoint: every validation
    round saves its bundle, so it holds the last round's weights, not the first's."""
    import torch

    from xvhpc.backends.base import DistInfo
    from xvhpc.pipeline.train import Position, build_parts, prepare_job, validate
    from xvhpc.rundir.run import RunDir
    from xvhpc.runtime.distributed import Context

    run = RunDir.open(final_run)
    spec = run.point(7)
    split = spec.data.split.model_copy(update={"select": 0.0})
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"split": split})})
    ctx = Context(DistInfo("local", 0, 0, 1, "127.0.0.1", 0), torch.device("cpu"), "gloo")
    job = prepare_job(run, 7, spec, ctx, 12)
    assert len(job.val_set) == 0 and len(job.train_set) > 0
    parts, pos = build_parts(job, ctx), Position()
    (final_run / "train" / "7").mkdir(parents=True)
    for pos.iteration in (6, 12):
        validate(job, parts, pos, ctx)
    meta = json.loads((final_run / "train" / "7" / "model" / "meta.json").read_text())
    assert meta["iteration"] == 12


def test_published_model_is_the_best_points_final_fit(final_run: Path) -> None:
    """Pooled out-of-fold figures rank the sweep points; RUN_DIR/model is the best one's final
    fit, carrying the decision rule fitted on its pooled predictions; the report says so."""
    import logging

    from xvhpc.evaluation import leaderboard
    from xvhpc.rundir.run import RunDir
    from xvhpc.tasks.classify import crossval
    from xvhpc.tasks.classify.metrics import Options

    run = RunDir.open(final_run)
    found, results = fake_folds(run, [0, 1, 2])
    more = fake_folds(run, [3, 4, 5], right=True)  # sweep point 1 is the best
    found, results = found | more[0], results | more[1]
    for p in (6, 7):  # the final fits' bundles, told apart by their weights
        (final_run / "train" / str(p) / "model").mkdir(parents=True, exist_ok=True)
        (final_run / "train" / str(p) / "model" / "weights.pt").write_text(f"final fit {p}")
    pooled = crossval.pool(run, results, found, Options(resamples=1000), logging.getLogger("t"))
    assert sorted(pooled) == [6, 7] and pooled[7]["accuracy"]["value"] == 1.0
    assert [r["point"] for r in leaderboard(run, pooled)] == [7, 6]
    model = final_run / "model"
    assert (model / "weights.pt").read_text() == "final fit 7"
    rule = json.loads((model / "decision.json").read_text())
    assert rule["fitted_on"]["data"] == "out-of-fold predictions"
    assert published_metrics(run, 7)["decision_rule"] == pooled[7]["decision_rule"]
    section = crossval_section(run, json.loads((final_run / "manifest.json").read_text()))
    assert "Deployed model: the final fit (training point 7) on every fold" in section
    assert "no held-out data" in section


def test_near_duplicates_found_across_parts_not_within() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (32, 32, 1), dtype=np.uint8)
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)  # a, slightly brighter
    c = rng.integers(0, 255, (32, 32, 1), dtype=np.uint8)
    assert dhash(a) == dhash(b) and dhash(a) != dhash(c)
    entries = [
        {"part": "fold 0 train", "dhash": dhash(a), "source": "a"},
        {"part": "fold 1 train", "dhash": dhash(b), "source": "b"},
        {"part": "fold 1 train", "dhash": dhash(c), "source": "c"},
        {"part": "fold 1 train", "dhash": dhash(c), "source": "c2"},  # same part: no leak
    ]
    near = near_duplicates(entries)
    assert near["pairs"] == 1 and {near["examples"][0]["a"], near["examples"][0]["b"]} == {"a", "b"}


def test_without_folds_the_select_split_is_carved_from_training(
    tmp_path: Path, demo_data: Path
) -> None:
    """data.split.select without folds: train, select and validation are disjoint patients;
    the report's wording says the validation split never chose the checkpoint."""
    from xvhpc.data.roles import role_index
    from xvhpc.rundir.run import RunDir
    from xvhpc.tasks.classify.evaluate import selection

    spec = tiny_spec(
        tmp_path / "spec.yaml",
        grouped_csv(tmp_path, demo_data),
        data={"csv": {"group_column": "patient"}, "split": {"validation": 0.25, "select": 0.3}},
    )
    run_dir = tmp_path / "run"
    xv("compile", str(spec), "--site", "local", "--out", str(run_dir))
    xv("ingest", "--run-dir", str(run_dir), "--shard", "all", "--merge")
    run = RunDir.open(run_dir)
    split = run.spec.data.split
    parts = {r: {s for s, _ in records(run_dir, role_index(run_dir, split, r))} for r in
             ("train", "select", "score")}  # fmt: skip
    assert all(parts.values())
    assert not parts["train"] & parts["select"] and not parts["select"] & parts["score"]
    assert not parts["train"] & parts["score"]
    assert len(set().union(*parts.values())) == len(
        build_catalog(run.plan["data_source"], run.spec.data).samples
    )
    chosen = selection(run.spec)
    assert not chosen["optimistic"] and chosen["scored"] == "the validation split"
    assert selection(run.spec.model_copy(update={"data": run.spec.data.model_copy(
        update={"split": split.model_copy(update={"select": 0.0})})}))["optimistic"]  # fmt: skip


def test_sweep_points_with_equal_parameters_stay_apart() -> None:
    """Two sweep points with the same parameters (a random sweep drawing twice) are two CV
    points, each with its own folds (by fold number) and final fit; a plan whose layout puts
    one fold twice in a sweep point is refused."""
    same = {"train.learning_rate": 0.1}
    points = [{**same, FOLD_KEY: k} for _ in range(2) for k in (0, 1)]
    points += [{**same, FINAL_KEY: True}] * 2
    assert cv_points(points) == [CvPoint([0, 1], 4), CvPoint([2, 3], 5)]
    with pytest.raises(ValueError, match="fold 0 out of place"):
        cv_points([{FOLD_KEY: 0}, {FOLD_KEY: 0}, {FOLD_KEY: 1}, {FOLD_KEY: 1}])


def test_pooling_refuses_a_record_scored_twice_or_missing(cv_run: Path) -> None:
    """A record held out by two folds, or fewer pooled predictions than the manifest's
    originals, is an error naming the sweep point, not a quietly different pooled figure."""
    import logging

    from xvhpc.evaluation import EvaluateError
    from xvhpc.rundir.run import RunDir
    from xvhpc.tasks.classify import crossval
    from xvhpc.tasks.classify.metrics import Options

    run = RunDir.open(cv_run)
    found, results = fake_folds(run, [0, 1, 2])
    found[1]["paths"][0] = found[0]["paths"][0]
    with pytest.raises(EvaluateError, match="sweep point 0: 1 record.* more than one fold"):
        crossval.pool(run, results, found, Options(resamples=10), logging.getLogger("t"))
    found, results = fake_folds(run, [0, 1, 2])
    found[2] = {k: v[:-1] for k, v in found[2].items()}
    with pytest.raises(EvaluateError, match="out-of-fold predictions for the .* original"):
        crossval.pool(run, results, found, Options(resamples=10), logging.getLogger("t"))


def test_folds_that_cannot_be_stratified_are_a_catalog_error() -> None:
    """Every class rarer than the folds (scikit-learn's ValueError): a CatalogError naming
    data.split.folds and the counts, not a traceback."""
    from xvhpc.data.catalog import CatalogError

    few = [Sample(f"/x/{i}.png", f"{i}.png", "ab"[i % 2], group=f"p{i}") for i in range(6)]
    with pytest.raises(CatalogError, match=r"data.split.folds: 5 folds .*'a': 3, 'b': 3"):
        assign_folds(few, SplitSpec(folds=5))


def test_ingest_time_data_keys_cannot_be_swept(tmp_path: Path, demo_data: Path) -> None:
    """data.split.* and the other data.* keys are read once, by ingest: sweeping them would
    silently change nothing, so the spec is refused at the sweep key's file:line."""
    for key, values in (("data.split.folds", [2, 3]), ("data.split.select", [0.1, 0.2]),
                        ("data.image_size", [32, 64])):  # fmt: skip
        path = tiny_spec(tmp_path / "sw.yaml", demo_data, sweep={"parameters": {key: values}})
        with pytest.raises(SpecError) as info:
            load_spec(path)
        line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if key in x)
        assert f"{path}:{line}" in str(info.value) and "read once, by ingest" in str(info.value)


def test_shards_written_with_other_split_settings_are_written_again(
    cv_run: Path, tmp_path_factory
) -> None:
    """cv_run's shards (3 folds, a select split) in a run recompiled without folds or select:
    ingest writes them again, saying why, instead of reusing stale folds; a fold outside
    data.split.folds is an error naming the shard; select > 0 with no select record refuses
    to train."""
    import torch

    from xvhpc.backends.base import DistInfo
    from xvhpc.data.roles import role_index
    from xvhpc.pipeline.train import TrainError, prepare_job
    from xvhpc.rundir.run import RunDir
    from xvhpc.runtime.distributed import Context
    from xvhpc.util import UserError

    tmp = tmp_path_factory.mktemp("resplit")
    spec = yaml.safe_load((cv_run / "spec.yaml").read_text())
    spec["data"]["split"] = {"validation": 0.25, "seed": 1}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    run_dir = tmp / "run"
    xv("compile", str(tmp / "spec.yaml"), "--site", "local", "--out", str(run_dir))
    shutil.copytree(cv_run / "shards", run_dir / "shards")
    proc = xv("ingest", "--run-dir", str(run_dir), "--shard", "all", "--merge")
    assert "was written with split settings" in proc.stderr and "writing it again" in proc.stderr
    side = json.loads((run_dir / "shards" / "shard-00000.json").read_text())
    assert side["split_settings"]["folds"] is None and side["split_settings"]["select"] == 0
    counts = json.loads((run_dir / "manifest.json").read_text())["counts_before_augmentation"]
    assert counts["val"] and not counts.get("select")
    with pytest.raises(UserError, match=r"shard-00000.h5 holds records of fold -1"):
        role_index(run_dir, SplitSpec(folds=3, fold=0), "train")
    with pytest.raises(UserError, match=r"of fold 0..2, not 0..1 \(data.split.folds: 2\)"):
        role_index(cv_run, SplitSpec(folds=2, fold=0), "score")
    run = RunDir.open(run_dir)
    data = run.spec.data.model_copy(update={"split": SplitSpec(validation=0.25, select=0.2)})
    ctx = Context(DistInfo("local", 0, 0, 1, "127.0.0.1", 0), torch.device("cpu"), "gloo")
    with pytest.raises(TrainError, match="data.split.select is 0.2 but no record"):
        prepare_job(run, 0, run.spec.model_copy(update={"data": data}), ctx, 2)


def test_identical_images_in_different_folds_or_splits_are_leaks(
    tmp_path: Path, demo_data: Path
) -> None:
    """An identical image in two folds (held out in one, trained on in the other), or in the
    select and train splits, is reported; the same image twice in one part is not; leaks:
    drop is refused with folds (there is no validation split to drop from)."""
    from xvhpc.data.manifest import leaked_hashes

    def original(split: str, fold: int, digest: str, source: str) -> dict:
        return {"split": split, "fold": fold, "hash": digest, "source": source}

    folded = [original("train", 0, "h1", "a"), original("train", 1, "h1", "b"),
              original("select", 1, "h2", "c"), original("select", 1, "h2", "d")]  # fmt: skip
    assert leaked_hashes([{"originals": folded}]) == [
        {"hash": "h1", "parts": ["fold 0 train", "fold 1 train"], "sources": ["a", "b"]}
    ]
    plain = [original("train", -1, "h3", "e"), original("select", -1, "h3", "f")]
    assert [e["parts"] for e in leaked_hashes([{"originals": plain}])] == [["select", "train"]]
    path = tiny_spec(tmp_path / "s.yaml", demo_data,
                     data={"leaks": "drop", "split": {"folds": 3}})  # fmt: skip
    with pytest.raises(SpecError) as info:
        load_spec(path)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "leaks" in x)
    assert f"{path}:{line}" in str(info.value) and "data.leaks" in str(info.value)


def test_evaluating_one_fold_keeps_its_rule_out_of_the_published_model(cv_run: Path) -> None:
    """evaluate --point N with folds fits N's decision rule on its held-out fold only: it goes
    under eval/N, labelled so, never into a bundle or RUN_DIR/model (the pooled rule stays)."""
    import argparse

    from xvhpc.pipeline import evaluate

    bundle = cv_run / "train" / "1" / "model"
    if not (bundle / "meta.json").exists():  # trained by the select-split test when it ran
        xv("train", "--run-dir", str(cv_run), "--point", "1", "--max-iterations", "2")
    published = cv_run / "model"
    published.mkdir(exist_ok=True)
    shutil.copyfile(bundle / "weights.pt", published / "weights.pt")
    pooled = '{"pooled": "rule"}'
    for model in (bundle, published):
        (model / "decision.json").write_text(pooled)
    try:
        args = argparse.Namespace(run_dir=str(cv_run), point=1, all=False, data=None)
        assert evaluate.main(args) == 0
        for model in (bundle, published):
            assert (model / "decision.json").read_text() == pooled, model
        rule = json.loads((cv_run / "eval" / "1" / "decision.json").read_text())
        assert rule["fitted_on"]["data"] == "held-out fold 1" and rule["fitted_on"]["point"] == 1
    finally:
        shutil.rmtree(published)
        (bundle / "decision.json").unlink()


def test_popcount_without_numpy_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open-CE's torch 2.0.1 environments hold numpy 1.x, which has no np.bitwise_count."""
    from xvhpc.data.dedupe import popcount

    values = np.random.default_rng(0).integers(0, 2**63, size=(5, 7), dtype=np.uint64)
    expected = [[bin(int(v)).count("1") for v in row] for row in values]
    assert popcount(values).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert popcount(values).tolist() == expected
