"""On the real local OpenLava (scripts/openlava.sh), through the lsf-classic dialect and local-lsf site.

OpenLava checks what classic LSF sites use (slots, arrays, done() dependencies, brequeue, the
run-limit signal, bjobs text); Summit's CSM options (-nnodes, -alloc_flags, -wa/-wt, -ti, jsrun)
are checked only by golden scripts and recording stand-ins (tests/unit/plan/test_compile.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_spec, wait_final, wait_iteration, xv
from xvhpc.backends.base import get_scheduler
from xvhpc.backends.commands import CommandRunner
from xvhpc.backends.lsf.classic import parse_bjobs, parse_bjobs_long

pytestmark = [pytest.mark.e2e, pytest.mark.lsf]

STEPS = ["ingest", "merge", "train", "evaluate", "report"]
# the Summit form before the fix: LSB_JOBINDEX is 0 (set, not empty) in a job that is no array
OLD_REQUEUE = 'brequeue "${LSB_JOBID}${LSB_JOBINDEX:+[$LSB_JOBINDEX]}"'


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Path]:
    """The run directory; whatever the test left queued is bkilled afterwards."""
    yield tmp_path / "run"
    if (tmp_path / "run" / "jobs.json").exists():
        xv("cancel", str(tmp_path / "run"), check=False)


def lsf_spec(path: Path, data: Path, name: str, **sections) -> Path:
    """A tiny spec training with 2 processes (mpirun) on the one OpenLava host."""
    resources = {"nodes": 1, "processes_per_node": 2, "walltime": "00:10:00"}
    return tiny_spec(
        path, data, name=name, resources=resources | sections.pop("resources", {}), **sections
    )


def bsub(script: Path, cwd: Path) -> str:
    out = subprocess.run(
        ["bsub"], stdin=script.open(), cwd=cwd, capture_output=True, text=True, check=True
    )
    return get_scheduler("lsf-classic").parse_job_id(out.stdout)


def wait_jobs(ids: list[str], timeout: float = 120) -> dict[str, tuple[str, str]]:
    """Poll `bjobs -a -w` until every row is DONE or EXIT in two polls 3 s apart (a job being
    requeued shows EXIT for about a second before PEND)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        out = subprocess.run(["bjobs", "-a", "-w", *ids], capture_output=True, text=True).stdout
        rows = parse_bjobs(out)
        if rows and all(stat in ("DONE", "EXIT") for stat, _ in rows.values()):
            if rows == last:
                return rows
            last = rows
        assert time.monotonic() < deadline, out
        time.sleep(3 if last else 1)


def wait_settled(run: Path, timeout: float = 420) -> dict:
    """`wait_final`, confirmed 3 s later: OpenLava shows a requeued job EXIT for about a second."""
    states = wait_final(run, timeout)
    while True:
        time.sleep(3)
        again = wait_final(run, timeout)
        if again == states:
            return states
        states = again


def test_parse_bjobs_text_from_openlava() -> None:
    """Real `bjobs -p -w` text: array elements carry their index only in JOB_NAME."""
    text = """JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME
105     root    PEND  normal     vm             -        arr_job[3] Nov 26 12:28
 : 1 host;
107     root    PEND  normal     vm             -        never_satisfied Nov 26 12:28
 Dependency condition invalid or never satisfied: 1 host;
110     root    RUN   normal     vm          vm:vm       t1         Nov 26 12:29
105     root    DONE  normal     vm          vm          arr_job[1] Nov 26 12:28
"""
    assert parse_bjobs(text) == {
        "105_2": ("PEND", ": 1 host;\n"),
        "107": ("PEND", "Dependency condition invalid or never satisfied: 1 host;\n"),
        "110": ("RUN", ""),
        "105_0": ("DONE", ""),
    }
    with pytest.raises(ValueError, match="unexpected bjobs line"):
        parse_bjobs("bjobs: invalid option -- 'o'\n")


def test_parse_bjobs_long_dependency_and_reason() -> None:
    """Real `bjobs -l` text (wrapped at 80 columns): condition and reason of a pending job."""
    text = """
Job Id <356>, Job Name <lsf-runlimit-report>, User <root>, Project <default>, St
                     atus <PEND>, Queue <normal>, Command <#!/bin/bash;#BSUB -J
                     "lsf-runlimit-report">, Job Description <xvhpc-8499cd45b2
                     ca-report>
Thu Nov 26 12:59:56: Submitted from host <vm>, CWD </tmp/run>, Output File <logs
                     /report.%J.out>, Dependency Condition <done(355)>;
 PENDING REASONS:
 Job dependency condition not satisfied: 1 host;

 SCHEDULING PARAMETERS:
------------------------------------------------------------------------------

Job Id <105[3]>, Job Name <arr_job[3]>, User <root>, Project <default>, Status
                     <EXIT>, Queue <normal>, Command <sleep 6>
"""
    assert parse_bjobs_long(text) == {
        "356": ("PEND", "done(355)", "Job dependency condition not satisfied: 1 host;\n"),
        "105_2": ("EXIT", "", ""),
    }


def test_classic_directives_no_csm_options_and_gpu_only_when_asked(
    tmp_path: Path, run: Path, demo_data: Path
) -> None:
    spec = lsf_spec(tmp_path / "spec.yaml", demo_data, "lsf-compile")
    xv("compile", str(spec), "--site", "local-lsf", "--out", str(run))
    train = (run / "scripts" / "train.lsf").read_text()
    assert (
        "#BSUB -n 2\n" in train and '#BSUB -R "span[ptile=2]"' in train and "#BSUB -W 0:10" in train
    )
    scripts = "".join(p.read_text() for p in (run / "scripts").glob("*.lsf"))
    for csm in ("-nnodes", "-alloc_flags", "-wa", "-wt", "-ti", "-gpu"):
        assert f"#BSUB {csm}" not in scripts, csm
    assert "jsrun" not in scripts and " -ti" not in (run / "scripts" / "submit.sh").read_text()
    # a GPU site: -gpu appears, only on the steps that use GPUs
    site = yaml.safe_load((ROOT / "site_configs" / "local-lsf.yaml").read_text())
    site |= {"name": "gpu-lsf", "node": {"cores": 8, "gpus": 4, "memory_gb": 64}}
    (tmp_path / "gpu-lsf.yaml").write_text(yaml.safe_dump(site))
    spec = lsf_spec(tmp_path / "gpu.yaml", demo_data, "lsf-gpu", resources={"gpus_per_node": 2})
    xv(
        "compile",
        str(spec),
        "--site",
        str(tmp_path / "gpu-lsf.yaml"),
        "--out",
        str(tmp_path / "gpu"),
    )
    scripts = tmp_path / "gpu" / "scripts"
    assert '#BSUB -gpu "num=2:j_exclusive=yes"' in (scripts / "train.lsf").read_text()  # N13
    assert (
        "#BSUB -gpu"
        not in (scripts / "ingest.lsf").read_text() + (scripts / "report.lsf").read_text()
    )
    # an IBM LSF site: -ti on dependent jobs, -wa/-wt before the run limit (N13)
    site |= {
        "name": "ibm-lsf",
        "scheduler_options": {"terminate_invalid_dependency": True, "warning_action": True},
    }
    (tmp_path / "ibm-lsf.yaml").write_text(yaml.safe_dump(site))
    xv(
        "compile",
        str(spec),
        "--site",
        str(tmp_path / "ibm-lsf.yaml"),
        "--out",
        str(tmp_path / "ibm"),
    )
    ibm = tmp_path / "ibm" / "scripts"
    assert "#BSUB -ti" in (ibm / "evaluate.lsf").read_text()
    assert "#BSUB -ti" not in (ibm / "ingest.lsf").read_text()  # no dependency: nothing to end
    assert "#BSUB -wa USR1" in (ibm / "train.lsf").read_text()


def test_pipeline_on_openlava(openlava_up, tmp_path: Path, run: Path, demo_data: Path) -> None:
    spec = lsf_spec(tmp_path / "spec.yaml", demo_data, "lsf-e2e")
    xv("submit", str(spec), "--site", "local-lsf", "--out", str(run))
    states = wait_settled(run)
    assert {k: v["state"] for k, v in states.items()} == dict.fromkeys(STEPS, "COMPLETED")
    ingest = states["ingest"]["job_id"]
    assert set(states["ingest"]["tasks"]) == {
        f"{ingest}_0",
        f"{ingest}_1",
    }  # a real 2-element array
    status = xv("status", str(run)).stdout
    assert "48 images, 0 skipped" in status and "iteration 12/12" in status
    assert (run / "report.html").exists() and (run / "model" / "weights.pt").exists()
    ranks = [
        json.loads(p.read_text()) for p in sorted((run / "train" / "0" / "ranks").glob("*.json"))
    ]
    assert [(r["environment"], r["world_size"]) for r in ranks] == [("openmpi", 2)] * 2
    assert len({r["weights_sha256"] for r in ranks}) == 1
    jobs = json.loads((run / "jobs.json").read_text())["steps"]
    assert jobs["merge"]["command"] == f"bsub -w 'done({ingest})' < scripts/merge.lsf"
    logs = xv("logs", str(run), "train").stdout
    assert f"train.{states['train']['job_id']}.out" in logs and "Successfully completed" in logs


def test_requeue_on_exit_75_resumes_from_checkpoint(
    openlava_up, tmp_path: Path, run: Path, demo_data: Path
) -> None:
    spec = lsf_spec(
        tmp_path / "spec.yaml",
        demo_data,
        "lsf-requeue",
        train={"max_iterations": 60, "checkpoint_every": 5, "log_every": 1, "val_every": 60},
    )
    xv("submit", str(spec), "--site", "local-lsf", "--out", str(run))
    train_id = json.loads((run / "jobs.json").read_text())["steps"]["train"]["job_id"]
    first = wait_iteration(run, 10)
    # what a walltime warning or preemption notice does: the trainer checkpoints and exits 75,
    # the script runs `brequeue ID` (no [0]: not an array), OpenLava runs the job again
    subprocess.run(["bkill", "-s", "USR1", train_id], check=True)
    deadline = time.monotonic() + 120
    while not (run / "train" / "requeues-0").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (run / "train" / "requeues-0").read_text().strip() == "1"
    states = wait_settled(run, timeout=600)
    assert all(v["state"] == "COMPLETED" for v in states.values()), states
    done = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert done["state"] == "done" and done["resumed_from"] >= first
    events = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(1 for e in events if e.get("event") == "resumed") == 1
    assert [e["iteration"] for e in events if "loss" in e] == list(range(1, 61))
    history = subprocess.run(["bhist", "-l", train_id], capture_output=True, text=True).stdout
    assert (
        "Job has been requeued" in history
        and "Bad job array index" not in xv("logs", str(run), "train").stdout
    )
    assert "requeued 1x" in xv("status", str(run)).stdout


def test_run_limit_signal_then_failed_parent_and_cancel(
    openlava_up, tmp_path: Path, run: Path, demo_data: Path
) -> None:
    """-W 0:02: OpenLava sends SIGUSR2 at the limit (2 min: a rank still starting dies of it); with no requeue left, train fails, and its
    dependents (no -ti on OpenLava) are reported never-satisfied, then removed by cancel."""
    spec = lsf_spec(
        tmp_path / "spec.yaml",
        demo_data,
        "lsf-runlimit",
        train={
            "max_iterations": 100000,
            "checkpoint_every": 50,
            "val_every": 100000,
            "max_requeues": 0,
        },
        resources={"walltime": "00:02:00"},
    )
    xv("submit", str(spec), "--site", "local-lsf", "--out", str(run))
    assert "#BSUB -W 0:02" in (run / "scripts" / "train.lsf").read_text()
    states = wait_settled(run, timeout=300)
    assert {k: v["state"] for k, v in states.items()} == {
        "ingest": "COMPLETED",
        "merge": "COMPLETED",
        "train": "FAILED",
        "evaluate": "DEPENDENCY_NEVER_SATISFIED",
        "report": "DEPENDENCY_NEVER_SATISFIED",
    }
    assert xv("status", str(run), check=False).returncode == 1
    logs = xv("logs", str(run), "train", "--lines", "400").stdout
    assert "signal received: checkpoint written" in logs and "requeue limit 0 reached" in logs
    assert (run / "train" / "0" / "checkpoint.pt").exists()
    children = [states[s]["job_id"] for s in ("evaluate", "report")]
    assert {
        stat
        for stat, _ in parse_bjobs(
            subprocess.run(["bjobs", "-a", "-w", *children], capture_output=True, text=True).stdout
        ).values()
    } == {"PEND"}
    xv("cancel", str(run))  # bkill: the finished jobs are no error
    assert {stat for stat, _ in wait_jobs(children).values()} == {"EXIT"}
    assert {v["state"] for v in wait_settled(run).values()} == {"COMPLETED", "FAILED"}


def test_cancel_a_running_pipeline(openlava_up, tmp_path: Path, run: Path, demo_data: Path) -> None:
    spec = lsf_spec(
        tmp_path / "spec.yaml", demo_data, "lsf-cancel", train={"max_iterations": 100000}
    )
    xv("submit", str(spec), "--site", "local-lsf", "--out", str(run))
    wait_iteration(run, 2)
    out = xv("cancel", str(run)).stdout
    ids = {k: s["job_id"] for k, s in json.loads((run / "jobs.json").read_text())["steps"].items()}
    assert out.startswith("cancelled ") and all(i in out for i in ids.values())
    rows = wait_jobs(list(ids.values()))  # the running train and its pending dependents: killed
    assert [rows[ids[s]][0] for s in ("train", "evaluate", "report")] == ["EXIT"] * 3
    states = wait_settled(run)
    assert [states[s]["state"] for s in STEPS] == ["COMPLETED"] * 2 + ["FAILED"] * 3


def test_brequeue_index_zero_fails_on_openlava_and_requeue_command_works(
    openlava_up, tmp_path: Path
) -> None:
    """Defect 1 at the real scheduler: `brequeue ID[0]` is refused; the script's command requeues
    a plain job by its id and an array element as ID[i]."""
    command = get_scheduler("lsf-classic").requeue_command()
    (tmp_path / "logs").mkdir()

    def script(header: str, first_run: str) -> str:
        return f"""#!/bin/bash
{header}
M=logs/$LSB_JOBID.$LSB_JOBINDEX.marker
if [ ! -e "$M" ]; then
  touch "$M"
  {first_run}
  {command}; echo "new rc=$?"
  sleep 60
  echo "not requeued"; exit 1
fi
echo "second run"
"""

    old = f'{OLD_REQUEUE}; echo "old rc=$?"'
    (tmp_path / "plain.lsf").write_text(script("#BSUB -J plain\n#BSUB -o logs/%J.out", old))
    (tmp_path / "array.lsf").write_text(script('#BSUB -J "arr[1-2]"\n#BSUB -o logs/%J.%I.out', ""))
    plain, array = bsub(tmp_path / "plain.lsf", tmp_path), bsub(tmp_path / "array.lsf", tmp_path)
    rows = wait_jobs([plain, array])
    assert rows == {plain: ("DONE", ""), f"{array}_0": ("DONE", ""), f"{array}_1": ("DONE", "")}
    first_plain = (tmp_path / "logs" / f"{plain}.out").read_text()
    assert f"{plain}[0]: Bad job array index list." in first_plain and "old rc=255" in first_plain
    for log in [f"{plain}.out", f"{array}.1.out", f"{array}.2.out"]:
        text = (tmp_path / "logs" / log).read_text()
        assert "second run" in text, text  # requeued and run again (the first run was killed)


def test_find_jobs_by_tag(openlava_up, tmp_path: Path) -> None:
    """A submit whose reply was lost finds its job by the -Jd tag (OpenLava keeps descriptions)."""
    scheduler = get_scheduler("lsf-classic")
    tag = f"xvhpc-test-{time.monotonic_ns()}"
    (tmp_path / "job.lsf").write_text(
        f'#!/bin/bash\n#BSUB -Jd "{tag}"\n#BSUB -o /dev/null\nsleep 60\n'
    )
    job = bsub(tmp_path / "job.lsf", tmp_path)
    try:
        assert scheduler.find_jobs(tag, CommandRunner()) == [job]
        assert scheduler.find_jobs(tag + "-other", CommandRunner()) == []
    finally:
        subprocess.run(["bkill", job], capture_output=True)
