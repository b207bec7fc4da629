"""On the real local Slurm (scripts/slurm.sh: munge, slurmdbd, slurmctld, two slurmd nodes)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_spec, wait_final, wait_iteration, xv

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


def sacct(job: str, fields: str = "JobID,State,NodeList,ExitCode") -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-j", job, "-n", "-P", "-o", fields], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_pipeline_on_two_nodes(slurm_up, tmp_path: Path, demo_data: Path) -> None:
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        name="slurm-e2e",
        resources={"nodes": 2, "processes_per_node": 1, "walltime": "00:10:00"},
    )
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    states = wait_final(run)
    assert {k: v["state"] for k, v in states.items()} == dict.fromkeys(
        ["ingest", "merge", "train", "evaluate", "report"], "COMPLETED"
    )
    status = xv("status", str(run)).stdout
    assert "48 images, 0 skipped" in status and "iteration 12/12" in status
    metrics = json.loads((run / "eval" / "0" / "metrics.json").read_text())
    assert (
        metrics["samples"] == 12
        and (run / "report.html").exists()
        and (run / "model" / "weights.pt").exists()
    )
    train_id = states["train"]["job_id"]
    rows = sacct(train_id)
    assert any(
        r[0] == f"{train_id}.0" and r[1] == "COMPLETED" and r[2] == "n[1-2]" for r in rows
    ), rows  # srun step on both nodes
    ranks = [
        json.loads(p.read_text()) for p in sorted((run / "train" / "0" / "ranks").glob("*.json"))
    ]
    assert [r["environment"] for r in ranks] == ["slurm", "slurm"] and len(
        {r["weights_sha256"] for r in ranks}
    ) == 1
    ingest_rows = sacct(states["ingest"]["job_id"])
    assert {r[0] for r in ingest_rows if "." not in r[0]} == {
        f"{states['ingest']['job_id']}_0",
        f"{states['ingest']['job_id']}_1",
    }


def test_sweep_as_job_array_with_leaderboard(slurm_up, tmp_path: Path, demo_data: Path) -> None:
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        name="slurm-sweep",
        sweep={
            "method": "grid",
            "parameters": {"train.learning_rate": [0.001, 0.05]},
            "max_concurrent": 2,
        },
    )
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    assert "#SBATCH --array=0-1%2" in (run / "scripts" / "train.sbatch").read_text()
    states = wait_final(run)
    assert all(v["state"] == "COMPLETED" for v in states.values()), states
    assert set(states["train"]["tasks"]) == {
        f"{states['train']['job_id']}_0",
        f"{states['train']['job_id']}_1",
    }
    board = json.loads((run / "eval" / "leaderboard.json").read_text())
    assert sorted(r["params"]["train.learning_rate"] for r in board["rows"]) == [0.001, 0.05]
    assert "Sweep leaderboard" in (run / "report.html").read_text()
    best = board["rows"][0]["point"]
    assert (
        json.loads((run / "model" / "meta.json").read_text())["spec"]["train"]["learning_rate"]
        == board["rows"][0]["params"]["train.learning_rate"]
    )
    assert (run / "train" / str(best) / "model").exists()


def test_walltime_signal_and_scontrol_requeue_resume(
    slurm_up, tmp_path: Path, demo_data: Path
) -> None:
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        name="slurm-requeue",
        data={"image_size": 64},
        train={
            "max_iterations": 160,  # two interruptions by iteration ~40, then the rest
            "checkpoint_every": 5,
            "log_every": 1,
            "val_every": 80,
            "batch_size": 16,
        },
    )
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    train_id = json.loads((run / "jobs.json").read_text())["steps"]["train"]["job_id"]
    first = wait_iteration(run, 10)
    # 1. the walltime warning (what --signal=B:USR1@60 sends): checkpoint, exit 75, self-requeue
    subprocess.run(["scancel", "--batch", "--signal=USR1", train_id], check=True)
    deadline = time.monotonic() + 120
    while not (run / "train" / "requeues-0").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (run / "train" / "requeues-0").read_text().strip() == "1"
    wait_iteration(run, first + 5)
    progress = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert progress["resumed_from"] is not None and progress["resumed_from"] >= first
    # 2. preemption from outside: scontrol requeue (SIGTERM to the step, job back to pending)
    second = wait_iteration(run, progress["resumed_from"] + 10)
    subprocess.run(["scontrol", "requeue", train_id], check=True)
    states = wait_final(run, timeout=600)
    assert all(v["state"] == "COMPLETED" for v in states.values()), states
    done = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert (
        done["state"] == "done" and done["iteration"] == 160 and done["resumed_from"] >= second - 5
    )
    events = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(1 for e in events if e.get("event") == "resumed") == 2
    iterations = [e["iteration"] for e in events if "loss" in e]
    assert iterations == list(range(1, 161)), "lost or repeated iterations across requeues"
    # the walltime warning requeued from the script (counted); scontrol requeue is Slurm's own:
    # the script saw SIGTERM, checkpointed and left the requeue to Slurm (a cancel also sends
    # SIGTERM, and must end the job: test_cancel_while_training_ends_the_job)
    assert "requeued 1x" in xv("status", str(run)).stdout
    assert "not requeued by this script" in xv("logs", str(run), "train", "--lines", "400").stdout


@pytest.mark.slurm
def test_cancel_while_training_ends_the_job(slurm_up, tmp_path: Path, demo_data: Path) -> None:
    """xvhpc cancel (scancel) of a training job that is running: the trainer checkpoints on the
    SIGTERM, but the job stays cancelled, never requeued by its own script."""
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        name="slurm-cancel",
        data={"image_size": 32},
        train={"max_iterations": 100000, "checkpoint_every": 5, "val_every": 100000},
    )
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    train_id = json.loads((run / "jobs.json").read_text())["steps"]["train"]["job_id"]
    wait_iteration(run, 3)
    xv("cancel", str(run))
    states = wait_final(run, timeout=300)
    assert states["train"]["state"].startswith("CANCELLED"), states
    time.sleep(3)  # a requeue would show in the job's history within the script's exit
    history = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-j", train_id, "-o", "State"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "REQUEUED" not in history and not (run / "train" / "requeues-0").exists(), history


def test_submit_test_only_asks_slurm_and_queues_nothing(
    slurm_up, tmp_path: Path, demo_data: Path
) -> None:
    """`xvhpc submit --test-only` runs `sbatch --test-only` on every script: a GRES request the
    cluster cannot meet (8 GPUs a node; CI's nodes have 4) is refused before anything is queued."""
    import yaml

    spec = tiny_spec(tmp_path / "spec.yaml", demo_data)
    ok = xv(
        "submit", str(spec), "--site", "local-slurm", "--out", str(tmp_path / "ok"), "--test-only"
    )
    assert ok.stdout.count(" ok: sbatch: Job ") == 5, ok.stdout
    site = yaml.safe_load((ROOT / "site_configs" / "local-slurm.yaml").read_text())
    site["name"] = "eight-gpus"
    site["node"]["gpus"] = 8
    site_file = tmp_path / "eight-gpus.yaml"
    site_file.write_text(yaml.safe_dump(site))
    greedy = tiny_spec(tmp_path / "greedy.yaml", demo_data, resources={"gpus_per_node": 8})
    before = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    bad = xv("submit", str(greedy), "--site", str(site_file), "--out", str(tmp_path / "bad"),
             "--test-only", check=False)  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "train     REFUSED: sbatch --test-only failed" in bad.stderr
    assert "ingest    ok:" in bad.stdout  # the CPU steps fit
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == before
    assert not (tmp_path / "bad" / "jobs.json").exists()
