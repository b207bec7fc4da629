"""Summit (LSF + CSM + jsrun): the compiled scripts run under bash with stand-in jsrun/brequeue
that record what they receive and react to signals, plus the queue policy of the plan.

OpenLava (tests/e2e/test_lsf.py) cannot check these: it has no CSM (-nnodes, -alloc_flags, -wa/-wt,
-ti) and no jsrun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import ROOT, xv
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.spec import check_against_site, load_site, load_spec

# A stand-in jsrun: records its argv and environment, then behaves as XVHPC_FAKE_MODE says.
FAKE_JSRUN = """#!/bin/bash
printf '%s\\n' "$(printf '%q ' "$@")|port=${MASTER_PORT:-}" >> "$FAKE_STATE/jsrun.log"
case "${FAKE_MODE:-ok}" in
  ok) exit 0 ;;
  checkpoint) exit 75 ;;
  marker_137)  # checkpointed, wrote the marker; the launcher then killed the ranks (srun: 137)
    run_dir=$(sed -n 's/.*--run-dir \\([^ ]*\\).*/\\1/p' <<<"$*")
    point=$(sed -n 's/.*--point \\([0-9]*\\).*/\\1/p' <<<"$*")
    echo "{}" > "$run_dir/train/requeue-$point"
    exit 137 ;;
  by_point)  # point 0 is slow, point FAKE_FAIL fails, the others end at once
    point=$(sed -n 's/.*--point \\([0-9]*\\).*/\\1/p' <<<"$*")
    echo "start $point" >> "$FAKE_STATE/events.log"
    [ "$point" -eq 0 ] && sleep 3
    echo "end $point" >> "$FAKE_STATE/events.log"
    [ "$point" -eq "${FAKE_FAIL:--1}" ] && exit 3
    exit 0 ;;
  train_waits)  # training waits for USR1 (then checkpoints, exits 75); other steps end at once
    [[ " $* " == *" train "* ]] || exit 0
    trap 'echo "usr1 $$" >> "$FAKE_STATE/signals.log"; exit 75' USR1
    while :; do sleep 0.1; done ;;
  wait_signal)  # a training point: runs until USR1, then checkpoints and exits 75
    trap 'echo "usr1 $$" >> "$FAKE_STATE/signals.log"; exit 75' USR1
    echo started >> "$FAKE_STATE/started.log"
    while :; do sleep 0.1; done ;;
esac
"""
# Stand-in bsub/bjobs (LSF 10.1 output forms): ids from 1001; every job DONE except those in
# FAKE_PURGED, which bjobs no longer knows (exit 255, "Job <ID> is not found", CLEAN_PERIOD).
FAKE_BSUB = """#!/bin/bash
n=$(cat "$FAKE_STATE/next" 2>/dev/null || echo 1001)
echo $((n + 1)) > "$FAKE_STATE/next"
echo "Job <$n> is submitted to queue <batch>."
"""
FAKE_BJOBS = """#!/bin/bash
recs=(); gone=0
for a in "$@"; do
  [[ $a =~ ^[0-9]+$ ]] || continue
  if [[ " ${FAKE_PURGED:-} " == *" $a "* ]]; then echo "Job <$a> is not found" >&2; gone=1; continue; fi
  recs+=("{\\"JOBID\\":\\"$a\\",\\"JOBINDEX\\":\\"0\\",\\"STAT\\":\\"DONE\\",\\"EXIT_CODE\\":\\"\\"}")
done
echo "{\\"RECORDS\\":[$(IFS=,; echo "${recs[*]}")]}"
exit $((gone ? 255 : 0))
"""
FAKE_RECORD = """#!/bin/bash
printf '%s\\n' "$*" >> "$FAKE_STATE/$(basename "$0").log"
"""


def _stand_ins(tmp_path: Path) -> dict[str, str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    fakes = {
        "jsrun": FAKE_JSRUN,
        "brequeue": FAKE_RECORD,
        "bsub": FAKE_BSUB,
        "bjobs": FAKE_BJOBS,
        "module": FAKE_RECORD,
        "conda": FAKE_RECORD,
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "XVHPC_PYTHON": sys.executable,
        "LSB_JOBID": "12345",
    }


def _spec(tmp_path: Path, **resources) -> Path:
    data = yaml.safe_load((ROOT / "jobs" / "covid_xray.yaml").read_text())
    data["data"]["source"] = str(tmp_path)
    data["resources"].update(resources)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep_spec(tmp_path: Path, points: int, max_concurrent: int, walltime: str) -> Path:
    data = yaml.safe_load((ROOT / "jobs" / "covid_xray.yaml").read_text())
    data["data"]["source"] = str(tmp_path)
    data["resources"].update(nodes=1, gpus_per_node=6, walltime=walltime)
    rates = [round(0.001 * (i + 1), 4) for i in range(points)]
    data["sweep"] = {
        "method": "grid",
        "parameters": {"train.learning_rate": rates},
        "max_concurrent": max_concurrent,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _compile(spec: Path, run: Path, site: str = "summit") -> tuple[object, dict[str, str]]:
    loaded, site_cfg = load_spec(spec), load_site(site)
    assert not check_against_site(loaded, site_cfg)
    plan = build_plan(loaded, site_cfg, str(run))
    files = render_plan(plan, site_cfg)
    for rel, text in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
    (run / "train").mkdir(exist_ok=True)
    return plan, files


def test_requeue_of_a_plain_job_names_the_job_not_element_zero(tmp_path: Path) -> None:
    """LSB_JOBINDEX is 0 outside arrays: `brequeue 12345[0]` fails; `brequeue 12345` is right."""
    run = tmp_path / "run"
    _compile(_spec(tmp_path), run)
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "0", "FAKE_MODE": "checkpoint"}
    proc = subprocess.run(["bash", str(run / "scripts/train.lsf")], env=env, capture_output=True)
    assert proc.returncode == 75, proc.stderr
    assert (tmp_path / "state/brequeue.log").read_text().split() == ["12345"]
    assert (run / "train/requeues-0").read_text().strip() == "1"


def test_requeue_stops_at_max_requeues(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _compile(_spec(tmp_path), run)
    (run / "train").mkdir(exist_ok=True)
    (run / "train/requeues-0").write_text("3\n")  # train.max_requeues defaults to 3
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "0", "FAKE_MODE": "checkpoint"}
    proc = subprocess.run(["bash", str(run / "scripts/train.lsf")], env=env, capture_output=True)
    assert proc.returncode == 75
    assert not (tmp_path / "state/brequeue.log").exists()
    assert b"requeue limit 3 reached" in proc.stderr


def test_every_step_runs_through_jsrun_never_on_the_launch_node(tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan, files = _compile(_spec(tmp_path), run)
    scripts = {k: v for k, v in files.items() if k.endswith(".lsf")}
    assert set(scripts) == {f"scripts/{s}.lsf" for s in ("ingest", "train", "evaluate", "report")}
    for name, text in scripts.items():
        calls = [line for line in text.splitlines() if '"$XVHPC_PY" -m xvhpc' in line]
        assert calls, name
        for line in calls:
            assert "jsrun " in line, f"{name} runs python on the launch node: {line}"
            assert "--smpiargs=-disable_gpu_hooks" in line, line
    # ingest: one job of MPI ranks (8 shards over 2 nodes), rank 0 merges; no array, no merge job
    assert "jsrun -n8 -r4 -a1 -g0 " in scripts["scripts/ingest.lsf"]
    assert "--shard all --merge" in scripts["scripts/ingest.lsf"]


def test_summit_defaults_follow_olcf_dl_layout(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _compile(_spec(tmp_path, gpus_per_node=6), run)
    train = (run / "scripts/train.lsf").read_text()
    assert "jsrun -n2 -r1 -a6 -g6 -c42 -bpacked:7 --smpiargs=-disable_gpu_hooks" in train
    assert '#BSUB -alloc_flags "smt4"' in train
    assert "gpumps" not in train


def test_dependencies_kill_orphans_and_status_sees_elements(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _, files = _compile(_spec(tmp_path), run)
    submit = files["scripts/submit.sh"]
    assert 'bsub -w "done(${job_ingest})" -ti' in submit
    dry = xv("submit", str(_spec(tmp_path)), "--site", "summit", "--out", str(run), "--dry-run")
    assert "-ti" in dry.stdout


def test_packed_sweep_waves_fit_walltime_and_bins(tmp_path: Path) -> None:
    """12 points, 4 at a time, 1 h each: 4 nodes is in the ≤45-node bin (2 h), so two waves per
    job and two jobs; never three waves inside a 2 h limit."""
    run = tmp_path / "run"
    plan, files = _compile(_sweep_spec(tmp_path, 12, 4, "01:00:00"), run)
    train = files["scripts/train.lsf"]
    assert '#BSUB -J "covid-xray-train[1-2]%2"' in train
    assert "#BSUB -nnodes 4" in train
    assert "#BSUB -W 2:00" in train
    step = next(s for s in plan.steps if s.name == "train")
    assert (step.per_wave, step.waves, step.pack_jobs) == (4, 2, 2)
    # 2 jobs x 4 nodes x 2 h, not 12 points x 1 h each on separate nodes counted twice
    assert json.loads(files["plan.json"])["node_hours_max"] >= 16


def test_packed_sweep_at_the_bin_limit_splits_into_jobs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan, files = _compile(_sweep_spec(tmp_path, 12, 4, "02:00:00"), run)
    train = files["scripts/train.lsf"]
    assert '#BSUB -J "covid-xray-train[1-3]%3"' in train
    assert "#BSUB -W 2:00" in train


def test_a_larger_allocation_uses_its_longer_bin(tmp_path: Path) -> None:
    """50 concurrent points of 1 node: 50 nodes fall in the 46-91 node bin (6 h)."""
    run = tmp_path / "run"
    plan, files = _compile(_sweep_spec(tmp_path, 100, 50, "02:00:00"), run)
    train = files["scripts/train.lsf"]
    assert "#BSUB -nnodes 50" in train
    assert "#BSUB -W 4:00" in train  # 2 waves of 2 h (100 points / 50): within 6 h
    assert '#BSUB -J "covid-xray-train"' in train


def test_packed_points_get_own_rendezvous_and_signals_reach_all(tmp_path: Path) -> None:
    """USR1 to the batch shell reaches every running point; one that checkpoints (exit 75) makes
    the job requeue itself (an array element: ID[INDEX]); later waves do not start."""
    run = tmp_path / "run"
    _compile(_sweep_spec(tmp_path, 12, 4, "01:00:00"), run)
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "2", "FAKE_MODE": "wait_signal"}
    proc = subprocess.Popen(
        ["bash", str(run / "scripts/train.lsf")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started = tmp_path / "state/started.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if started.exists() and len(started.read_text().split()) == 4:
            break
        time.sleep(0.1)
    assert len(started.read_text().split()) == 4, "4 points must run at once"
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert len((tmp_path / "state/signals.log").read_text().splitlines()) == 4
    launches = (tmp_path / "state/jsrun.log").read_text().splitlines()
    assert len(launches) == 4, "the second wave must not start after the signal"
    points = sorted(int(line.split("--point ")[1].split()[0]) for line in launches)
    assert points == [8, 9, 10, 11]  # element 2 of 2 holds points 8..15 (only 8..11 exist)
    ports = {line.rsplit("port=", 1)[1] for line in launches}
    assert len(ports) == 4, "each concurrent point needs its own rendezvous port"
    assert (tmp_path / "state/brequeue.log").read_text().split() == ["12345[2]"]
    for point in points:
        assert (run / f"train/requeues-{point}").read_text().strip() == "1"


def test_a_checkpoint_requeues_even_when_the_launcher_returns_137(tmp_path: Path) -> None:
    """srun --kill-on-bad-exit (and jsrun) may turn the ranks' exit into 137: the marker rank 0
    writes after the checkpoint decides (issue 22 N4), for a plain job and for packed points."""
    run = tmp_path / "run"
    _compile(_spec(tmp_path), run)
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "0", "FAKE_MODE": "marker_137"}
    proc = subprocess.run(["bash", str(run / "scripts/train.lsf")], env=env, capture_output=True)
    assert proc.returncode == 75, proc.stderr
    assert (tmp_path / "state/brequeue.log").read_text().split() == ["12345"]
    assert not (run / "train/requeue-0").exists(), "the marker is consumed"
    packed = tmp_path / "packed"
    _compile(_sweep_spec(tmp_path, 4, 4, "01:00:00"), packed)
    proc = subprocess.run(["bash", str(packed / "scripts/train.lsf")], env=env, capture_output=True)
    assert proc.returncode == 75, proc.stderr
    assert (tmp_path / "state/brequeue.log").read_text().split() == ["12345", "12345"]


def test_a_freed_slot_starts_the_next_point_and_a_failed_point_stops_no_other(
    tmp_path: Path,
) -> None:
    """Packed points run from a slot pool (N8): while point 0 is still running, points 1..5 go
    through the other slot; point 2 fails and points 3..5 still run (N10); the job fails at the
    end, with the failed point named."""
    run = tmp_path / "run"
    plan, _ = _compile(_sweep_spec(tmp_path, 6, 2, "00:10:00"), run)
    assert next(s for s in plan.steps if s.name == "train").pack_jobs == 1  # type: ignore[attr-defined]
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "0", "FAKE_MODE": "by_point", "FAKE_FAIL": "2"}
    proc = subprocess.run(["bash", str(run / "scripts/train.lsf")], env=env, capture_output=True)
    events = (tmp_path / "state/events.log").read_text().split("\n")
    assert proc.returncode == 1, proc.stderr
    assert b"point 2 failed (exit 3)" in proc.stderr
    assert {f"end {p}" for p in range(6)} <= set(events), events
    assert events.index("start 5") < events.index("end 0"), events


def test_the_sites_python_wins_over_the_submitting_one(tmp_path: Path) -> None:
    """A torch-free login venv that submits must not become the compute nodes' Python (N14)."""
    run = tmp_path / "run"
    _, files = _compile(_spec(tmp_path), run)
    assert "XVHPC_PY=/ccs/proj/abc123/xvhpc-opence/bin/python\n" in files["scripts/train.lsf"]
    assert "XVHPC_PYTHON" not in files["scripts/train.lsf"]
    _, slurm = _compile(_spec(tmp_path), tmp_path / "r2", site="x86-v100")  # no env.python
    assert 'XVHPC_PY="${XVHPC_PYTHON:-python3}"' in slurm["scripts/train.sbatch"]


def test_evaluate_and_report_walltimes_come_from_the_spec(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = _spec(tmp_path, evaluate_walltime="01:30:00", report_walltime="00:20:00")
    _, files = _compile(spec, run)
    assert "#BSUB -W 1:30" in files["scripts/evaluate.lsf"]  # N11: not a fixed 30 min
    assert "#BSUB -W 0:20" in files["scripts/report.lsf"]


def test_status_of_a_finished_packed_sweep_and_of_purged_jobs(tmp_path: Path) -> None:
    """A packed sweep is one plain LSF job: all DONE is COMPLETED, not CANCELLED (N3). A job
    LSF purged after CLEAN_PERIOD is PURGED: status works, and a resubmit is not refused (N15)."""
    run = tmp_path / "run"
    spec = _sweep_spec(tmp_path, 4, 4, "01:00:00")
    env = _stand_ins(tmp_path)
    xv("submit", str(spec), "--site", "summit", "--out", str(run), env=env)
    states = json.loads(xv("status", str(run), "--json", env=env).stdout)
    assert {n: s["state"] for n, s in states.items()} == dict.fromkeys(
        ("ingest", "train", "evaluate", "report"), "COMPLETED"
    )
    purged = {**env, "FAKE_PURGED": "1001 1002"}  # ingest and train forgotten
    states = json.loads(xv("status", str(run), "--json", env=purged).stdout)
    assert [states[n]["state"] for n in ("ingest", "train", "evaluate")] == [
        "PURGED",
        "PURGED",
        "COMPLETED",
    ]
    again = xv("submit", str(spec), "--site", "summit", "--out", str(run), env=purged)
    assert "submitted 4 jobs" in again.stdout


def test_debug_queue_forbids_chaining_so_the_pipeline_is_one_allocation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = _spec(tmp_path, queue="debug", walltime="00:30:00", ingest_walltime="00:20:00")
    plan, files = _compile(spec, run)
    assert [s.name for s in plan.steps] == ["pipeline"]
    assert "-w" not in files["scripts/submit.sh"]
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "0"}
    proc = subprocess.run(["bash", str(run / "scripts/pipeline.lsf")], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    order = [
        line.split(" -m xvhpc ")[1].split()[0]
        for line in (tmp_path / "state/jsrun.log").read_text().splitlines()
    ]
    assert order == ["ingest", "train", "evaluate", "report"]


def test_single_allocation_on_slurm(tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan, files = _compile(_spec(tmp_path, single_allocation=True), run, site="x86-v100")
    script = files["scripts/pipeline.sbatch"]
    assert "--shard all --merge" in script
    assert "#SBATCH --signal=B:USR1@90" in script
    assert script.index(" ingest ") < script.index(" train ") < script.index(" evaluate ")


def test_notify_by_email(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _, lsf = _compile(_spec(tmp_path, notify="email"), run)
    assert "#BSUB -Ne\n" in lsf["scripts/train.lsf"] and "#BSUB -B" not in lsf["scripts/train.lsf"]
    assert "#BSUB -N\n" in lsf["scripts/report.lsf"]  # one mail at the end, not one per job
    _, slurm = _compile(_spec(tmp_path, notify="email"), tmp_path / "r2", site="x86-v100")
    assert "#SBATCH --mail-type=FAIL\n" in slurm["scripts/train.sbatch"]
    assert "#SBATCH --mail-type=END,FAIL\n" in slurm["scripts/report.sbatch"]


def test_power9_slurm_counts_smt_threads(tmp_path: Path) -> None:
    """32 cores x SMT4, 4 tasks: 8 cores = 32 hardware threads each, as Slurm counts CPUs."""
    run = tmp_path / "run"
    _, files = _compile(_spec(tmp_path), run, site="power9-slurm")
    assert "#SBATCH --cpus-per-task=32" in files["scripts/train.sbatch"]
    assert "--cpus-per-task=32 " in files["scripts/train.sbatch"]  # srun line too


FAKE_SLOW_SBATCH = """#!/bin/bash
state="$FAKE_STATE"
n=$(cat "$state/n" 2>/dev/null || echo 100); echo $((n + 1)) > "$state/n"
comment=$(sed -n 's/^#SBATCH --comment=//p' "${@: -1}")
echo "$n|$comment" >> "$state/queue"
echo "sbatch $*" >> "$state/calls"
if [ ! -e "$state/timed_out" ]; then  # the first reply is lost after the job was queued
  touch "$state/timed_out"
  echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
  exit 1
fi
echo "$n"
"""
FAKE_SQUEUE = """#!/bin/bash
cat "$FAKE_STATE/queue"
"""


def test_a_submit_whose_reply_was_lost_is_not_submitted_twice(tmp_path: Path) -> None:
    env = _stand_ins(tmp_path)
    bin_dir = tmp_path / "bin"
    for name, text in {"sbatch": FAKE_SLOW_SBATCH, "squeue": FAKE_SQUEUE}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    run = tmp_path / "run"
    proc = xv(
        "submit",
        str(_spec(tmp_path)),
        "--site",
        "x86-v100",
        "--out",
        str(run),
        env={**env, "XVHPC_SUBMIT_INTERVAL": "0"},
    )
    calls = (tmp_path / "state/calls").read_text().splitlines()
    assert len(calls) == 5, calls  # ingest, merge, train, evaluate, report: once each
    jobs = json.loads((run / "jobs.json").read_text())
    assert jobs["steps"]["ingest"]["job_id"] == "100"
    assert "was submitted" in proc.stdout


def test_a_single_allocation_longer_than_its_queue_allows_is_refused(tmp_path: Path) -> None:
    """ingest 0:30 + train 2:00 + evaluate 0:30 + report 0:15 do not fit debug's 2 h."""
    proc = xv(
        "compile",
        str(_spec(tmp_path, queue="debug")),
        "--site",
        "summit",
        "--out",
        str(tmp_path / "run"),
        check=False,
    )
    assert proc.returncode != 0
    assert "job 'pipeline' needs 03:15:00" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_sweep_in_one_allocation_runs_every_wave(tmp_path: Path) -> None:
    data = yaml.safe_load(_sweep_spec(tmp_path, 6, 2, "00:20:00").read_text())
    data["resources"].update(queue="debug", ingest_walltime="00:10:00")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(data))
    plan, files = _compile(spec, tmp_path / "run")
    train = next(s for s in plan.steps[0].stages if s.name == "train")
    assert (train.per_wave, train.waves, train.pack_jobs) == (2, 3, 1)
    assert "last=$(( first + 6 < 6 ? first + 6 : 6 ))" in files["scripts/pipeline.lsf"]


def test_summit_ingest_ranks_use_the_cores_of_their_resource_set(monkeypatch) -> None:
    """N9: an MPI ingest rank runs a worker pool where workers start without fork (Summit's
    site sets forkserver), and its CPU count is its resource set's (the affinity mask), not
    LSF's whole-job LSB_DJOB_NUMPROC."""
    from xvhpc.pipeline.ingest import rank_workers
    from xvhpc.runtime.whoami import BatchTask, allocated_cpus

    ranks = BatchTask(None, 7, mpi_rank=3, mpi_size=8)
    monkeypatch.setenv("XVHPC_MP_START_METHOD", "forkserver")
    assert rank_workers(7, ranks) == 7
    monkeypatch.setenv("XVHPC_MP_START_METHOD", "fork")
    assert rank_workers(7, ranks) == 1  # a forked MPI rank is unsafe: one process
    assert rank_workers(7, BatchTask(None, 7)) == 7
    jsrun = {"JSM_NAMESPACE_RANK": "3", "LSB_DJOB_NUMPROC": "84"}
    assert allocated_cpus(jsrun) == len(os.sched_getaffinity(0))


def test_the_centres_caps_are_file_line_errors(tmp_path: Path) -> None:
    """N5: Slurm MaxArraySize (x86-v100: 1001), Summit's 100 queued jobs per user in batch and
    the killable queue's 91 nodes are refused at compile, naming the key, its line and the
    limit, instead of a rejection after part of the chain was queued."""
    from xvhpc.spec import SpecError

    def problems(spec: Path, site: str) -> str:
        loaded, site_cfg = load_spec(spec), load_site(site)
        found = check_against_site(loaded, site_cfg)
        if found:
            return "\n".join(map(str, found))
        try:
            build_plan(loaded, site_cfg, str(tmp_path / "run"))
        except SpecError as exc:
            return str(exc)
        return ""

    big = _sweep_spec(tmp_path, 1000, 4, "00:30:00")
    data = yaml.safe_load(big.read_text())
    data["sweep"]["parameters"]["train.batch_size"] = [16, 32]  # 2000 points
    big.write_text(yaml.safe_dump(data))
    slurm_big = tmp_path / "slurm.yaml"
    data["resources"]["gpus_per_node"] = 4
    slurm_big.write_text(yaml.safe_dump(data))
    said = problems(slurm_big, "x86-v100")
    assert "sweep: job 'train' would be an array of 2000 elements" in said
    assert "allows 1001 (site key sweep.max_array_size" in said and "slurm.yaml:" in said
    said = problems(big, "summit")  # packed: 2000 points, 4 at a time, 1 h bins
    assert "queue 'batch' takes at most 100 per user" in said and "resources.queue" in said
    killable = _spec(tmp_path, queue="killable", nodes=200, walltime="12:00:00")
    assert "queue 'killable' takes 1-91 nodes" in problems(killable, "summit")
    fine = _sweep_spec(tmp_path, 12, 4, "01:00:00")
    assert problems(fine, "summit") == ""


def test_predict_chunks_within_the_array_size() -> None:
    """A predict array over more chunks than the array size allows says which --chunk-size
    fits; on Summit an element holds one chunk per GPU (6), so 6 x 1000 chunks fit."""
    import pytest

    from xvhpc.plan.predict import PredictError, PredictJob, check_array_cap

    inputs = [{"path": f"/d/{i}.png", "rel": f"{i}.png"} for i in range(2500)]
    job = PredictJob("/m", "/d", inputs, [], 2, 64, False)  # 1250 chunks
    with pytest.raises(
        PredictError, match=r"1250 chunks, but x86-v100 allows 1001.*--chunk-size 3"
    ):
        check_array_cap(job, load_site("x86-v100"))
    check_array_cap(PredictJob("/m", "/d", inputs, [], 3, 64, False), load_site("x86-v100"))
    check_array_cap(job, load_site("summit"))  # 209 elements of 6 chunks
    many = PredictJob("/m", "/d", inputs * 3, [], 1, 64, False)  # 7500 chunks
    with pytest.raises(PredictError, match=r"summit allows 6000 \(1000 array elements"):
        check_array_cap(many, load_site("summit"))


def test_submit_test_only_on_lsf_says_it_is_not_available(tmp_path: Path) -> None:
    proc = xv(
        "submit", str(_spec(tmp_path)), "--site", "summit", "--out", str(tmp_path / "run"),
        "--test-only", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "lsf has no scheduler-side dry run" in proc.stderr and "HINT:" in proc.stderr


def test_a_partial_summit_node_is_a_warning(tmp_path: Path) -> None:
    """Summit gives and charges whole nodes: 4 of 6 GPUs validates, with a warning (N16)."""
    four = xv("validate", str(_spec(tmp_path, gpus_per_node=4)), "--site", "summit")
    assert "resources.gpus_per_node is 4 of the 6 GPUs" in four.stderr and "2 GPU(s)" in four.stderr
    six = xv("validate", str(_spec(tmp_path, gpus_per_node=6)), "--site", "summit")
    assert "warning" not in six.stderr
    slurm = xv("validate", str(_spec(tmp_path, gpus_per_node=2)), "--site", "x86-v100")
    assert "warning" not in slurm.stderr  # Slurm shares a node's rest with other jobs


def test_single_allocation_stops_training_at_its_share_and_survives_late_signals(
    tmp_path: Path,
) -> None:
    """N12: one job runs ingest, train, evaluate, report under one walltime. Training is sent
    USR1 at the end of its share (it checkpoints and the job requeues), so evaluate and report
    keep theirs; a walltime signal outside training does not kill the batch shell."""
    run = tmp_path / "run"
    plan, files = _compile(_spec(tmp_path, queue="debug", walltime="00:30:00"), run)
    script = files["scripts/pipeline.lsf"]
    stages = plan.steps[0].stages  # type: ignore[attr-defined]
    ends = sum(s.job_seconds for s in stages[:2])  # ingest's and train's shares
    assert f"xvhpc_deadline {ends}" in script
    env = {**_stand_ins(tmp_path), "LSB_JOBINDEX": "0", "FAKE_MODE": "train_waits"}
    started = time.monotonic()
    proc = subprocess.run(  # as if the job had run up to 2 s before training's share ends
        ["bash", "-c", f'SECONDS={ends - 2}; . "$0"', str(run / "scripts/pipeline.lsf")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 75, proc.stderr
    assert time.monotonic() - started < 60
    assert (tmp_path / "state/signals.log").read_text().count("usr1") == 1
    assert (tmp_path / "state/brequeue.log").read_text().split() == ["12345"]
    late = subprocess.Popen(
        ["bash", "-c", "xvhpc_between() { :; }; " + _between_only(script)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)
    late.send_signal(signal.SIGUSR1)
    _, err = late.communicate(timeout=30)
    assert late.returncode == 0 and "walltime warning outside training" in err


def _between_only(script: str) -> str:
    """The script's between-stages trap, then a short wait standing in for evaluate."""
    start = script.index("xvhpc_between() {")
    end = script.index("\nxvhpc_between\n", start) + len("\nxvhpc_between\n")
    return script[start:end] + "sleep 2 & wait $! || true; sleep 0.2\n"


def test_a_packed_sweep_stages_shards_on_every_node_it_uses(tmp_path: Path) -> None:
    """N7: 4 points packed on 4 nodes copy the shards to all 4 nodes, not to node 1 only."""
    data = yaml.safe_load(_sweep_spec(tmp_path, 4, 4, "01:00:00").read_text())
    data["data"]["stage"] = "node_local"
    spec = tmp_path / "staged.yaml"
    spec.write_text(yaml.safe_dump(data))
    _, files = _compile(spec, tmp_path / "run")
    train = files["scripts/train.lsf"]
    assert "#BSUB -nnodes 4" in train
    assert "jsrun -n4 -r1 -a1 -c1 -g0 --smpiargs=-disable_gpu_hooks " in train
    assert " stage --run-dir " in train


def test_single_allocation_holds_the_nodes_training_needs(tmp_path: Path) -> None:
    """N9: 64 shards in a 2-node debug pipeline ingest on those 2 nodes (12 ranks sharing the
    shards), not on 11 nodes that training then leaves idle."""
    data = yaml.safe_load(_spec(tmp_path, queue="debug", walltime="00:30:00").read_text())
    data["data"]["shards"] = 64
    spec = tmp_path / "shards.yaml"
    spec.write_text(yaml.safe_dump(data))
    _, files = _compile(spec, tmp_path / "run")
    script = files["scripts/pipeline.lsf"]
    assert "#BSUB -nnodes 2" in script
    assert "jsrun -n12 -r6 -a1 -g0 " in script  # ingest: 6 ranks on each of the 2 nodes


def test_horovod_gets_an_mpi_launch(tmp_path: Path) -> None:
    """N16: Horovod is an MPI program: srun wires its ranks with PMIx."""
    data = yaml.safe_load(_spec(tmp_path).read_text())
    data["train"]["backend"] = "horovod"
    spec = tmp_path / "hvd.yaml"
    spec.write_text(yaml.safe_dump(data))
    _, files = _compile(spec, tmp_path / "run", site="x86-v100")
    assert "--kill-on-bad-exit=1 --mpi=pmix " in files["scripts/train.sbatch"]


def test_predict_jobs_within_the_queue(tmp_path: Path) -> None:
    """Predict is held to the queue as compile holds a pipeline: Summit's 100 queued jobs per
    user (array elements counted) and its walltime bins."""
    import pytest

    from xvhpc.plan.predict import PredictError, PredictJob, build_predict_plan, check_queue

    site = load_site("summit")
    inputs = [{"path": f"/d/{i}.png", "rel": f"{i}.png"} for i in range(6000)]
    many = PredictJob("/m", "/d", inputs, [], 10, 64, False)  # 600 chunks: 100 elements + merge
    plan = build_predict_plan(many, {}, site, tmp_path, "01:00:00")
    with pytest.raises(PredictError, match=r"101 jobs .* at most 100 per user.*--chunk-size"):
        check_queue(plan, site)
    fewer = PredictJob("/m", "/d", inputs, [], 100, 64, False)  # 60 chunks: 10 elements
    check_queue(build_predict_plan(fewer, {}, site, tmp_path, "01:00:00"), site)
    long = build_predict_plan(fewer, {}, site, tmp_path, "03:00:00")  # 1 node: the 2 h bin
    with pytest.raises(PredictError, match=r"allows 02:00:00"):
        check_queue(long, site)
