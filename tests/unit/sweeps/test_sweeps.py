"""Optuna studies across array tasks (journal file under RUN_DIR), pruning, early stopping,
TensorBoard event files, the study in status / leaderboard / report (xvhpc/sweeps)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_spec, xv
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.spec import SpecError, load_site, load_spec
from xvhpc.sweeps.study import Objective, existing_study, open_study
from xvhpc.sweeps.tracker import no_improvement

FAST = {  # a few iterations of 32 px: what the study mechanics need, no more
    "max_iterations": 6,
    "batch_size": 4,
    "val_every": 2,
    "log_every": 1,
    "checkpoint_every": 2,
}
ENV = {"OMP_NUM_THREADS": "1"}  # two shared cores: one thread per process


def study_spec(path: Path, source: Path, trials: int, rates: list[float], **sweep) -> Path:
    return tiny_spec(
        path,
        source,
        train=FAST,
        sweep={
            "method": "tpe",
            "trials": trials,
            "max_concurrent": 2,
            "parameters": {"train.learning_rate": rates},
            "prune": {"method": "asha", "min_iterations": 2},
            **sweep,
        },
    )


def states(run: Path) -> list[tuple[int, str, int | None]]:
    study = existing_study(run)
    assert study is not None
    return [(t.number, t.state.name, t.user_attrs.get("slot")) for t in study.get_trials()]


# ----------------------------------------------------------------- spec and plan (no torch)
@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"method": "tpe"}, "method: tpe needs trials: N"),
        ({"method": "grid", "trials": 4}, "trials: N needs method: tpe or random"),
        ({"method": "grid", "prune": {"method": "asha"}}, "prune needs an Optuna study"),
        ({"method": "tpe", "trials": 4, "prune": {"method": "hyperband"}}, "sweep.prune.method"),
    ],
)
def test_study_spec_errors_name_file_line_and_key(
    tmp_path: Path, sweep: dict, message: str
) -> None:
    spec = tiny_spec(
        tmp_path / "s.yaml",
        tmp_path,
        sweep={"parameters": {"train.learning_rate": [0.1, 0.01]}, **sweep},
    )
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    text = str(err.value)
    assert f"{spec}:" in text
    assert message in text


RANGE_FORMS = "valid: a list of choices [a, b, ...] or a range {low: L, high: H}"


@pytest.mark.parametrize(
    ("method", "values", "message"),
    [
        ("tpe", {"low": 0.1, "high": 0.01}, "low (0.1) must be below high (0.01)"),
        ("tpe", {"low": 0.0, "high": 0.1, "log": True}, "log: true needs low > 0 (got 0.0)"),
        ("tpe", {"low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "step or log: true, not"),
        ("tpe", {"low": 0.1, "hi": 1.0}, "high: required key is missing"),
        ("tpe", "0.1", "expected a list of choices [a, b, ...] or a range {low: L, high: H}"),
        ("grid", {"low": 0.001, "high": 0.1}, "a range needs method: random or tpe"),
        ("random", {"low": -1.0, "high": 0.1}, "value -1.0: Input should be greater than 0"),
    ],
)
def test_range_errors_name_file_line_key_and_the_valid_forms(
    tmp_path: Path, method: str, values: object, message: str
) -> None:
    """Every bad range is a SpecError at the swept key's own line, never a traceback."""
    sweep = {"method": method, "parameters": {"train.learning_rate": values}}
    if method == "tpe":
        sweep["trials"] = 4
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path, sweep=sweep)
    line = (
        spec.read_text()
        .splitlines()
        .index("    train.learning_rate:" + ("" if isinstance(values, dict) else " '0.1'"))
        + 1
    )
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    text = str(err.value)
    assert f"{spec}:{line}: sweep.parameters.train.learning_rate: " in text, text
    assert message in text
    if method == "tpe":  # a malformed range names both valid forms
        assert RANGE_FORMS in text or "expected a list" in text


def test_ranges_are_suggested_as_optuna_distributions_and_sampled_by_random_sweeps(
    tmp_path: Path,
) -> None:
    """A log float range and an integer range with a step: Optuna's own float/int
    distributions in a study (TPE and random), uniform draws in a compile-time random sweep; the
    report's scatter puts a log range on a log axis."""
    from optuna.distributions import FloatDistribution, IntDistribution

    from xvhpc.spec import sweep_points
    from xvhpc.sweeps.board import params_text, scatter_figure
    from xvhpc.sweeps.study import bind_slot

    ranges = {
        "train.learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
        "train.batch_size": {"low": 8, "high": 64, "step": 8},
    }
    rows = []
    for method in ("tpe", "random"):
        spec = tiny_spec(
            tmp_path / f"{method}.yaml",
            tmp_path,
            sweep={"method": method, "trials": 6, "parameters": ranges},
        )
        loaded = load_spec(spec)
        assert loaded.spec.sweep is not None
        study = open_study(tmp_path / method, loaded.spec)
        for slot in range(6):
            bound = bind_slot(study, slot, loaded.spec.sweep)
            lr, batch = bound.params["train.learning_rate"], bound.params["train.batch_size"]
            assert isinstance(lr, float) and 1e-4 <= lr <= 1e-1
            assert isinstance(batch, int) and batch in range(8, 65, 8)
            rows.append({"params": bound.params, "accuracy": 0.5, "state": "done"})
        trial = study.get_trials()[0]
        assert trial.distributions["train.learning_rate"] == FloatDistribution(1e-4, 1e-1, log=True)
        assert trial.distributions["train.batch_size"] == IntDistribution(8, 64, step=8)
        assert len({r["params"]["train.learning_rate"] for r in rows[-6:]}) == 6

    spec = tiny_spec(
        tmp_path / "r.yaml",
        tmp_path,
        sweep={"method": "random", "samples": 5, "parameters": ranges},
    )
    points = sweep_points(load_spec(spec))
    assert points == sweep_points(load_spec(spec)), "a random sweep is seeded"
    assert len(points) == 5
    assert all(1e-4 <= p["train.learning_rate"] <= 1e-1 for p in points)
    assert all(p["train.batch_size"] in range(8, 65, 8) for p in points)
    assert params_text({"train.learning_rate": 0.0031622776601683794, "train.batch_size": 16}) == (
        '{"train.batch_size": 16, "train.learning_rate": 0.003162}'
    )
    fig = scatter_figure(rows, "accuracy")
    axes = {ax.get_xlabel(): ax.get_xscale() for ax in fig.axes}
    assert axes == {"train.batch_size": "linear", "train.learning_rate": "log"}


def test_early_stop_is_a_train_key_in_validation_rounds(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path, train={"early_stop": {"patience": 0}})
    with pytest.raises(SpecError, match="train.early_stop.patience"):
        load_spec(spec)


def test_study_compiles_to_trials_slots_array_and_packed_summit(tmp_path: Path) -> None:
    """Slurm: an array of ``trials`` slots capped at max_concurrent; Summit: the slots packed in
    waves, each packed point running ``train --point SLOT`` itself (so it asks the study)."""
    spec = study_spec(tmp_path / "s.yaml", tmp_path, 8, [0.1, 0.01])
    data = yaml.safe_load(spec.read_text())
    data["resources"] = {"nodes": 1, "gpus_per_node": 6, "walltime": "01:00:00"}
    data["sweep"]["max_concurrent"] = 4
    spec.write_text(yaml.safe_dump(data))
    loaded = load_spec(spec)
    slurm = build_plan(loaded, load_site("x86-v100"), str(tmp_path / "a"))
    assert slurm.points == [{}] * 8
    train = next(s for s in slurm.steps if s.name == "train")
    assert (train.array, train.max_concurrent) == (8, 4)
    script = render_plan(slurm, load_site("x86-v100"))["scripts/train.sbatch"]
    assert "#SBATCH --array=0-7%4" in script
    summit = build_plan(loaded, load_site("summit"), str(tmp_path / "b"))
    packed = next(s for s in summit.steps if s.name == "train")
    assert packed.packed and packed.array == 8 and packed.per_wave == 4
    lsf = render_plan(summit, load_site("summit"))["scripts/train.lsf"]
    assert 'xvhpc_pool "$first" "$last" 4' in lsf
    assert 'train --run-dir "$RUN_DIR" --point "$XVHPC_INDEX"' in lsf


def test_a_large_study_on_summit_packs_trials_within_the_eligible_job_cap(tmp_path: Path) -> None:
    """64 trials, 8 at a time, 2 h each: one 2 h wave of 8 one-node points per job (the ≤45-node
    bin allows 2 h), so 8 packed jobs, of which LSF lets only Summit's 4 eligible ones run
    (``%4``). Every packed point is a slot that asks the study: the script fixes no parameter."""
    spec = study_spec(tmp_path / "s.yaml", tmp_path, 64, [0.1])
    data = yaml.safe_load(spec.read_text())
    data["resources"] = {"nodes": 1, "gpus_per_node": 6, "walltime": "02:00:00"}
    data["sweep"]["max_concurrent"] = 8
    data["sweep"]["parameters"] = {"train.learning_rate": {"low": 1e-4, "high": 0.1, "log": True}}
    spec.write_text(yaml.safe_dump(data))
    summit = build_plan(load_spec(spec), load_site("summit"), str(tmp_path / "run"))
    train = next(s for s in summit.steps if s.name == "train")
    assert (train.array, train.per_wave, train.waves, train.pack_jobs) == (64, 8, 1, 8)
    assert summit.points == [{}] * 64
    lsf = render_plan(summit, load_site("summit"))["scripts/train.lsf"]
    assert '#BSUB -J "tiny-train[1-8]%4"' in lsf
    assert "#BSUB -nnodes 8" in lsf
    assert 'xvhpc_pool "$first" "$last" 8' in lsf
    assert 'train --run-dir "$RUN_DIR" --point "$XVHPC_INDEX"' in lsf
    assert "learning_rate" not in lsf


@pytest.mark.parametrize(
    ("values", "patience", "stop"),
    [
        ([1.0, 0.9, 0.8, 0.85], 2, False),  # one round since the best: patience 2 not used up
        ([1.0, 0.8, 0.85, 0.81], 2, True),  # two rounds without beating 0.8: stop
        ([1.0, 0.8, 0.85, 0.79], 2, False),  # the last round improved
        ([1.0, 0.9], 2, False),  # not enough rounds yet
        ([float("nan"), 2.0, 2.0], 1, True),  # NaN is never an improvement, nor a best
    ],
)
def test_no_improvement_counts_validation_rounds(
    values: list[float], patience: int, stop: bool
) -> None:
    assert no_improvement(values, patience, Objective("val_loss", "minimize")) is stop


# ----------------------------------------------------------------- real training
def _train_slots(run: Path, slots: list[int]) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, **ENV, "XVHPC_PYTHON": sys.executable}
    return [
        subprocess.run(
            [sys.executable, "-m", "xvhpc", "train", "--run-dir", str(run), "--point", str(s)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        for s in slots
    ]


@pytest.mark.timeout(2400)  # 12 trainings' worth of process starts on two shared cores
def test_tpe_study_six_trials_two_concurrent_tasks_and_rerun_repeats_none(
    tmp_path: Path, demo_data: Path
) -> None:
    """Two task processes at once (as an array with %2 runs them) share the journal file: six
    slots give six trials, one per slot; running every slot again trains none of them again."""
    spec = study_spec(tmp_path / "spec.yaml", demo_data, 6, [0.001, 0.003, 0.01, 0.03])
    run = tmp_path / "run"
    xv("compile", str(spec), "--out", str(run), cwd=tmp_path)
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge", env=ENV)
    outcomes = _two_tasks(run)
    assert [rc for rc, _ in outcomes] == [0, 0], outcomes
    first = states(run)
    assert len(first) == 6
    assert sorted(slot for _, _, slot in first) == [0, 1, 2, 3, 4, 5]
    assert {state for _, state, _ in first} <= {"COMPLETE", "PRUNED"}
    logs = {s: (run / "train" / str(s) / "metrics.jsonl").read_text() for s in range(6)}
    for s in range(6):
        bound = json.loads((run / "train" / str(s) / "trial.json").read_text())
        assert bound["slot"] == s
        assert bound["params"]["train.learning_rate"] in (0.001, 0.003, 0.01, 0.03)

    again = _two_tasks(run)  # the array resubmitted (a killed driver, a rerun)
    assert [rc for rc, _ in again] == [0, 0], again
    assert states(run) == first, "a rerun asked for or changed a trial"
    assert {s: (run / "train" / str(s) / "metrics.jsonl").read_text() for s in range(6)} == logs
    said = "".join(err for _, err in again)
    assert said.count("trial already finished; nothing to train") == 6


def _two_tasks(run: Path) -> list[tuple[int, str]]:
    """Slots 0, 2, 4 and 1, 3, 5 as two concurrent task processes (an array's %2)."""
    env = {**os.environ, **ENV, "XVHPC_PYTHON": sys.executable}
    code = (
        "import sys, subprocess; "
        "sys.exit(max(subprocess.call([sys.executable, '-m', 'xvhpc', 'train', '--run-dir', "
        "sys.argv[1], '--point', s]) for s in sys.argv[2:]))"
    )
    tasks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(run), *slots],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for slots in (["0", "2", "4"], ["1", "3", "5"])
    ]
    return [(t.wait(timeout=2400), t.stderr.read() if t.stderr else "") for t in tasks]


@pytest.mark.timeout(1200)  # two shared cores: process starts are slow
def test_forced_bad_learning_rate_is_pruned_before_its_last_iteration(
    tmp_path: Path, demo_data: Path
) -> None:
    """ASHA: a sane trial finishes first; a trial forced to learning rate 10 reports a far worse
    validation loss at the first rung and stops there (exit 0, state PRUNED)."""
    spec = study_spec(tmp_path / "spec.yaml", demo_data, 2, [0.01, 10.0], objective="val_loss")
    run = tmp_path / "run"
    xv("compile", str(spec), "--out", str(run), cwd=tmp_path)
    study = open_study(run, load_spec(spec).spec)
    study.enqueue_trial({"train.learning_rate": 0.01})  # asked in this order by slots 0, 1
    study.enqueue_trial({"train.learning_rate": 10.0})
    xv("run", str(spec), "--out", str(run), cwd=tmp_path, env=ENV)
    trials = existing_study(run).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    bad = trials[1]
    assert bad.params == {"train.learning_rate": 10.0}
    assert bad.last_step is not None and bad.last_step < FAST["max_iterations"]
    progress = json.loads((run / "train" / "1" / "progress.json").read_text())
    assert progress["state"] == "pruned"
    assert progress["iteration"] < FAST["max_iterations"]
    board = json.loads((run / "eval" / "leaderboard.json").read_text())
    assert [(r["point"], r["state"]) for r in board["rows"]] == [(0, "done"), (1, "pruned")]
    assert board["rows"][1]["accuracy"] is None  # a pruned trial is not evaluated
    assert json.loads((run / "model" / "meta.json").read_text())  # the done trial is published
    status = xv("status", str(run)).stdout
    assert "trials 2/2 finished: 1 done, 0 running, 1 pruned, 0 failed" in status
    assert "best trial 0 (slot 0) val_loss" in status
    report = (run / "report.html").read_text()
    assert "Sweep: metric against each parameter" in report
    assert "1 done, 1 pruned" in report


@pytest.mark.timeout(1200)  # two shared cores: process starts are slow
def test_tensorboard_event_files_parse_with_tensorboards_reader(
    tmp_path: Path, demo_data: Path
) -> None:
    """Scalars (loss, lr, images/s, data-wait, validation) and the hparams of the point, read
    back with TensorBoard's own EventAccumulator; early stopping ends the run before its end."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        train={
            **FAST,
            "max_iterations": 40,  # 20 rounds; 12 images cannot raise accuracy 20 times
            "early_stop": {"metric": "val_accuracy", "patience": 1},
        },
    )
    run = tmp_path / "run"
    xv("compile", str(spec), "--out", str(run), cwd=tmp_path)
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge", env=ENV)
    (proc,) = _train_slots(run, [0])
    assert proc.returncode == 0, proc.stderr
    acc = EventAccumulator(str(run / "train" / "0" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "images_per_s", "data_wait_fraction", "val_loss", "val_accuracy"} <= tags
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(1, len(loss) + 1))
    assert all(math.isfinite(e.value) for e in loss)
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    progress = json.loads((run / "train" / "0" / "progress.json").read_text())
    rounds = [
        json.loads(x)
        for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
        if "val_loss" in x
    ]
    assert progress["state"] == "stopped_early"
    assert progress["iteration"] < 40
    accuracy = [r["val_accuracy"] for r in rounds]
    assert accuracy[-1] <= max(accuracy[:-1]), "stopped although the last round improved"


def test_a_slot_resumes_its_live_trial_skips_a_finished_one_and_retries_a_failed_one(
    tmp_path: Path,
) -> None:
    """The binding rules a killed or rerun task relies on, on a real journal file."""
    from xvhpc.sweeps.study import bind_slot, tell

    spec = load_spec(study_spec(tmp_path / "s.yaml", tmp_path, 4, [0.1, 0.01])).spec
    assert spec.sweep is not None
    study = open_study(tmp_path, spec)
    first = bind_slot(study, 0, spec.sweep)
    assert (first.trial, first.state) == (0, "RUNNING")
    again = bind_slot(open_study(tmp_path, spec, 0), 0, spec.sweep)  # the task was killed
    assert (again.trial, again.params) == (first.trial, first.params)
    tell(study, first.trial, "COMPLETE", 0.5)
    done = bind_slot(study, 0, spec.sweep)
    assert done.finished and done.trial == 0
    failed = bind_slot(study, 1, spec.sweep)
    tell(study, failed.trial, "FAIL")
    retry = bind_slot(study, 1, spec.sweep)
    assert retry.trial not in (0, failed.trial) and retry.state == "RUNNING"
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "FAIL", "RUNNING"]


def test_a_failed_trials_files_are_set_aside_not_resumed_with_new_parameters(
    tmp_path: Path,
) -> None:
    import logging

    from xvhpc.rundir import Layout
    from xvhpc.sweeps.study import Binding
    from xvhpc.sweeps.tracker import _set_aside_other_trial

    layout = Layout(tmp_path)
    layout.train_dir(3).mkdir(parents=True)
    layout.checkpoint(3).write_bytes(b"old trial's weights")
    layout.trial(3).write_text(json.dumps({"trial": 5, "slot": 3, "params": {}}))
    _set_aside_other_trial(layout, 3, Binding(5, {}, "RUNNING"), logging.getLogger("t"))
    assert layout.checkpoint(3).exists(), "the same trial resumes its own checkpoint"
    _set_aside_other_trial(layout, 3, Binding(9, {}, "RUNNING"), logging.getLogger("t"))
    assert not layout.train_dir(3).exists()
    assert (
        tmp_path / "train" / "3.trial-5" / "checkpoint.pt"
    ).read_bytes() == b"old trial's weights"


def test_nan_objective_is_a_failed_trial_not_an_error(tmp_path: Path) -> None:
    from xvhpc.sweeps.study import bind_slot, tell

    spec = load_spec(study_spec(tmp_path / "s.yaml", tmp_path, 2, [0.1, 0.01])).spec
    assert spec.sweep is not None
    study = open_study(tmp_path, spec)
    bound = bind_slot(study, 0, spec.sweep)
    tell(study, bound.trial, "COMPLETE", float("nan"))
    assert study.get_trials()[0].state.name == "FAIL"


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the task ended before {path} appeared"
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.02)


@pytest.mark.timeout(1200)  # two shared cores: process starts are slow
def test_a_killed_trial_is_orphaned_in_status_and_a_rerun_resumes_it_from_its_checkpoint(
    tmp_path: Path, demo_data: Path
) -> None:
    """kill -9 of a real training task: its trial stays RUNNING in the journal but status calls
    it orphaned (its heartbeat names a dead process); the slot's rerun resumes the same trial
    from its checkpoint. A trial asked by a task killed before it bound a slot is failed by the
    next slot to start (no slot could ever resume it). With ``track: [tensorboard, mlflow]`` the
    resumed trial continues its one MLflow run, read back with MLflow's own client."""
    import signal
    import time

    from xvhpc.sweeps.board import status_line
    from xvhpc.sweeps.heartbeat import heartbeat_path
    from xvhpc.sweeps.study import state_name

    spec = study_spec(tmp_path / "spec.yaml", demo_data, 1, [0.01], prune={"method": "none"})
    data = yaml.safe_load(spec.read_text())
    # 60 iterations: the kill lands well before the end
    data["train"] = {**data["train"], "max_iterations": 60, "track": ["tensorboard", "mlflow"]}
    spec.write_text(yaml.safe_dump(data))
    loaded = load_spec(spec).spec
    run = tmp_path / "run"
    xv("compile", str(spec), "--out", str(run), cwd=tmp_path)
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge", env=ENV)
    open_study(run, loaded).ask()  # trial 0: its task died between ask and binding a slot
    time.sleep(1.5)

    argv = [sys.executable, "-m", "xvhpc", "train", "--run-dir", str(run), "--point", "0"]
    grace = {"XVHPC_HEARTBEAT_GRACE_S": "1"}  # trial 0 is older than that: failed at once
    proc = subprocess.Popen(argv, env={**os.environ, **ENV, **grace}, stderr=subprocess.PIPE)
    _wait_for(run / "train" / "0" / "checkpoint.pt", proc)
    beat = json.loads(heartbeat_path(run, 1).read_text())
    os.kill(beat["pid"], signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = json.loads((run / "train" / "0" / "progress.json").read_text())["iteration"]
    assert killed_at < 60

    trials = existing_study(run).get_trials()
    assert [(t.number, t.state.name, t.user_attrs.get("slot")) for t in trials] == [
        (0, "FAIL", None),
        (1, "RUNNING", 0),
    ]
    assert state_name(run, trials[1]) == "orphaned"
    line = status_line(run, loaded)
    assert "0 running, 0 pruned, 1 failed, 1 orphaned (RUNNING with no live task" in line

    (again,) = _train_slots(run, [0])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint at iteration" in again.stderr
    assert [(t.number, t.state.name) for t in existing_study(run).get_trials()] == [
        (0, "FAIL"),
        (1, "COMPLETE"),
    ]
    progress = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert progress["resumed_from"] is not None and progress["iteration"] == 60
    assert not heartbeat_path(run, 1).exists(), "a finished trial keeps no heartbeat"
    assert "1 done, 0 running, 0 pruned, 1 failed" in status_line(run, loaded)
    _check_mlflow_store(run, killed_at)


def _check_mlflow_store(run: Path, killed_at: int) -> None:
    """One run for the trial: its parameters, every logged step once across the kill, the
    validation rounds, the final metrics; parsed by MlflowClient on the file:// store."""
    from xvhpc.sweeps.mlflow_store import client as mlflow_client

    client = mlflow_client(run)  # MlflowClient(tracking_uri="file://RUN_DIR/mlruns")
    (found,) = client.search_runs(["0"])
    assert found.info.status == "FINISHED"
    assert found.data.tags["xvhpc.state"] == "done"
    assert found.data.tags["xvhpc.trial"] == "1"
    params = found.data.params
    assert (params["train.learning_rate"], params["trial"], params["model.arch"]) == (
        "0.01",
        "1",
        "resnet18",
    )
    loss = [m.step for m in client.get_metric_history(found.info.run_id, "loss")]
    assert sorted(loss) == list(range(1, 61)), "a step missing or logged twice"
    assert killed_at > 0
    rounds = [m.step for m in client.get_metric_history(found.info.run_id, "val_loss")]
    assert sorted(rounds) == list(range(2, 61, 2))
    assert {"final/val_loss", "final/val_accuracy", "final/best_val_accuracy"} <= set(
        found.data.metrics
    )


def test_mlflow_logging_forks_nothing_and_reaches_no_network(tmp_path: Path) -> None:
    """In a fresh interpreter (mlflow's import-time probes included) with process creation and
    socket connections made to fail: a run opened, logged and closed all the same."""
    code = """if True:
        import os, socket, subprocess, sys
        from pathlib import Path
        def refuse(*a, **k):
            raise AssertionError(f"forbidden: {a[:2]}")
        subprocess.Popen.__init__ = refuse
        os.fork = os.posix_spawn = refuse
        socket.socket.connect = socket.socket.connect_ex = refuse
        from xvhpc.rundir import Layout
        from xvhpc.sweeps.mlflow_store import MlflowRun, client
        run = MlflowRun.open(Layout(Path(sys.argv[1])), 0, {"train.learning_rate": 0.1}, None)
        run.metrics({"loss": 1.5, "val_accuracy": 0.5}, 2)
        run.close({"val_accuracy": 0.5}, "done")
        (found,) = client(Path(sys.argv[1])).search_runs(["0"])
        print(found.data.params, found.data.metrics, found.info.status)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DO_NOT_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "{'train.learning_rate': '0.1'}" in proc.stdout
    assert "'final/val_accuracy': 0.5" in proc.stdout and "FINISHED" in proc.stdout


def test_track_mlflow_without_mlflow_installed_is_a_spec_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what find_spec sees when it is absent
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path, train={"track": "mlflow"})
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    line = spec.read_text().splitlines().index("  track: mlflow") + 1
    assert f"{spec}:{line}: train.track: " in str(err.value)
    assert "pip install 'xvhpc[mlflow]'" in str(err.value)
    monkeypatch.delitem(sys.modules, "mlflow")
    assert load_spec(spec).spec.train.track == ["mlflow"]


def test_a_silent_heartbeat_is_orphaned_after_the_grace_period_only(tmp_path: Path) -> None:
    """A task on another node (its pid cannot be checked from here) counts as dead only once its
    heartbeat file has been still for the grace period."""
    import socket
    import time

    from xvhpc.sweeps.heartbeat import GRACE_S, Heartbeat, heartbeat_path, orphaned

    spec = load_spec(study_spec(tmp_path / "s.yaml", tmp_path, 2, [0.1, 0.01])).spec
    trial = open_study(tmp_path, spec).ask()
    frozen = existing_study(tmp_path).get_trials()[0]
    path = heartbeat_path(tmp_path, trial.number)
    beat = Heartbeat(path, interval=0.05).start(trial.number, 0)
    record = json.loads(path.read_text())
    assert (record["host"], record["pid"]) == (socket.gethostname(), os.getpid())
    first = path.stat().st_mtime_ns
    time.sleep(0.3)
    assert path.stat().st_mtime_ns > first, "the thread keeps the file fresh"
    assert orphaned(tmp_path, frozen) == ""
    beat.stop()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "host": "another-node"}))
    now = time.time()
    assert orphaned(tmp_path, frozen, now=now + GRACE_S - 5) == ""
    assert "no heartbeat from another-node" in orphaned(tmp_path, frozen, now=now + GRACE_S + 5)


def test_a_float_step_range_draws_high_and_clean_values_on_optunas_grid(tmp_path: Path) -> None:
    """A random sweep's float step range draws every value Optuna's suggest_float(step=…) can,
    ``high`` included, as the decimals written (0.3, not 0.30000000000000004), never past high;
    a study's suggestions (fresh and read back) are the same decimals."""
    import warnings

    from optuna.distributions import FloatDistribution

    from xvhpc.spec import sweep_points
    from xvhpc.sweeps.study import bind_slot, decode_params

    key, grid = "train.learning_rate", {0.1, 0.2, 0.3, 0.4}
    for high in (0.4, 0.45):
        values = {"low": 0.1, "high": high, "step": 0.1}
        sweep = {"method": "random", "samples": 40, "parameters": {key: values}}
        drawn = {
            p[key]
            for p in sweep_points(load_spec(tiny_spec(tmp_path / "s.yaml", tmp_path, sweep=sweep)))
        }
        assert drawn == grid, drawn
        with warnings.catch_warnings():  # Optuna warns that it lowers 0.45 to 0.4
            warnings.simplefilter("ignore", UserWarning)
            assert FloatDistribution(**values).high == 0.4, "Optuna's grid ends where ours does"
    values = {"low": 0.1, "high": 0.4, "step": 0.1}
    sweep = {"method": "random", "trials": 16, "parameters": {key: values}}
    spec = load_spec(tiny_spec(tmp_path / "t.yaml", tmp_path, sweep=sweep)).spec
    assert spec.sweep is not None
    study = open_study(tmp_path / "study", spec)
    suggested = {bind_slot(study, slot, spec.sweep).params[key] for slot in range(16)}
    stored = {decode_params(t.params, spec.sweep)[key] for t in study.get_trials()}
    assert suggested == stored and 0.3 in suggested and suggested <= grid, suggested


@pytest.mark.parametrize(
    "values",
    [{"low": 8, "high": 64.0}, {"low": 8.0, "high": 64}, {"low": 8, "high": 64, "step": 8.0}],
)
def test_a_float_range_on_an_integer_key_is_refused_at_its_line(
    tmp_path: Path, values: dict
) -> None:
    """An Optuna study would suggest 23.7 for train.batch_size in every trial: refused at compile."""
    sweep = {"method": "tpe", "trials": 4, "parameters": {"train.batch_size": values}}
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path, sweep=sweep)
    line = spec.read_text().splitlines().index("    train.batch_size:") + 1
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    text = str(err.value)
    assert f"{spec}:{line}: sweep.parameters.train.batch_size: " in text, text
    assert "takes whole numbers: give integer low, high and step" in text


def test_a_trial_whose_point_fails_to_validate_is_failed_and_its_heartbeat_stopped(
    tmp_path: Path,
) -> None:
    """A slot bound to a trial whose parameters do not validate (a spec compiled before the check
    above) tells the study FAIL and leaves no heartbeat: it is not left RUNNING for ever."""
    import logging

    import torch

    from xvhpc.backends.base import DistInfo
    from xvhpc.rundir.run import RunDir
    from xvhpc.runtime.distributed import Context
    from xvhpc.spec.schema import RangeSpec
    from xvhpc.sweeps.heartbeat import heartbeat_path
    from xvhpc.sweeps.tracker import PointTracker

    loaded = load_spec(study_spec(tmp_path / "s.yaml", tmp_path, 2, [0.1, 0.01]))
    assert loaded.spec.sweep is not None
    loaded.spec.sweep.parameters["train.batch_size"] = RangeSpec(low=8, high=64.0)
    ctx = Context(DistInfo("local", 0, 0, 1, "127.0.0.1", 0), torch.device("cpu"), "gloo")
    with pytest.raises(SpecError, match="train.batch_size"):
        PointTracker.open(RunDir(tmp_path, {}, loaded), 0, ctx, logging.getLogger("t"))
    assert states(tmp_path) == [(0, "FAIL", 0)]
    assert not heartbeat_path(tmp_path, 0).exists()


def test_mlflow_store_race_is_retried_and_a_tracking_failure_never_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Array tasks starting at once race to create RUN_DIR/mlruns (MLflow's FileStore writes
    mlruns/0/meta.yaml unlocked): the loser's "exists as" error is retried, not raised. Any
    later tracking error is a warning: training goes on without MLflow."""
    import logging
    import shutil

    import torch

    from xvhpc.backends.base import DistInfo
    from xvhpc.rundir import Layout
    from xvhpc.runtime.distributed import Context
    from xvhpc.sweeps.mlflow_store import MlflowRun, _offline, client
    from xvhpc.sweeps.tracker import PointTracker

    _offline()
    from mlflow.store.tracking.file_store import FileStore

    create = FileStore._create_default_experiment
    raced: list[bool] = []

    def another_task_first(store: FileStore) -> None:
        if not raced:
            raced.append(True)
            create(store)  # the other task writes mlruns/0/meta.yaml first ...
        create(store)  # ... and this one finds it there: "Yaml file '…' exists as '…'"

    monkeypatch.setattr(FileStore, "_create_default_experiment", another_task_first)
    layout = Layout(tmp_path)
    run = MlflowRun.open(layout, 0, {"train.learning_rate": 0.1}, None)
    assert raced and [r.info.run_id for r in client(tmp_path).search_runs(["0"])] == [run.run_id]

    spec = load_spec(tiny_spec(tmp_path / "s.yaml", tmp_path, train={"track": "mlflow"})).spec
    ctx = Context(DistInfo("local", 0, 0, 1, "127.0.0.1", 0), torch.device("cpu"), "gloo")
    tracker = PointTracker(layout, 0, spec, ctx, {}, log=logging.getLogger("xvhpc"))
    tracker.mlflow = run
    shutil.rmtree(tmp_path / "mlruns")  # the store is gone (a purge, a lost mount)
    with caplog.at_level(logging.WARNING, logger="xvhpc"):
        tracker.scalars({"iteration": 1, "loss": 1.5})
        assert tracker.mlflow is None, "a failed tracker is dropped, not retried every step"
        tracker.finish()
        (tmp_path / "mlruns").write_text("not a directory")  # nor can a store be made there
        tracker.start(0)
        assert tracker.mlflow is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("MLflow tracking off" in w for w in warnings), warnings
