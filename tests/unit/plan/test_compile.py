"""Compiled scripts: golden files per job × site, bash -n + shellcheck, hostile input, LSF by recording.

Regenerate the golden files after an intended change:
    XVHPC_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/unit/plan/test_compile.py -k golden
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require, tiny_spec, xv
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.spec import SpecError, check_against_site, load_site, load_spec
from xvhpc.spec.site import known_sites

GOLDEN = ROOT / "tests" / "golden"
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
SITES = sorted(known_sites())


def rendered(job: Path, site_name: str) -> dict[str, str]:
    loaded, site = load_spec(job), load_site(site_name)
    problems = check_against_site(loaded, site)
    if problems:
        return {"ERRORS.txt": str(SpecError(problems)).replace(str(ROOT) + "/", "") + "\n"}
    plan = build_plan(loaded, site, f"/scratch/runs/{job.stem}")
    plan.data_source = f"/scratch/data/{job.stem}"  # the same in every checkout (container mounts)
    return {k: v for k, v in render_plan(plan, site).items() if k.startswith("scripts/")}


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_golden_scripts(job: Path, site: str) -> None:
    files = rendered(job, site)
    assert files == rendered(job, site), "rendering must be deterministic"
    folder = GOLDEN / job.stem / site
    if os.environ.get("XVHPC_REGEN_GOLDEN"):
        for old in folder.rglob("*"):
            if old.is_file():
                old.unlink()
        for rel, text in files.items():
            (folder / Path(rel).name).parent.mkdir(parents=True, exist_ok=True)
            (folder / Path(rel).name).write_text(text)
    expected = {f.name: f.read_text() for f in sorted(folder.iterdir())} if folder.is_dir() else {}
    assert {Path(k).name: v for k, v in files.items()} == expected, (
        f"golden mismatch for {job.name} × {site}; regenerate with XVHPC_REGEN_GOLDEN=1 if intended"
    )


def test_shipped_examples_compile_for_their_targets() -> None:
    summit = rendered(ROOT / "jobs" / "covid_xray.yaml", "summit")
    text = "\n".join(summit.values())
    assert "#BSUB -nnodes 2" in summit["scripts/train.lsf"]
    assert "jsrun " in text
    assert 'bsub -w "done(${job_ingest})" -ti' in summit["scripts/submit.sh"]
    assert '#BSUB -alloc_flags "smt4"' in text
    assert "gpumps" not in text  # MPS is unsupported with NCCL
    assert "#BSUB -P ABC123" in text
    assert "module load open-ce" in text
    slurm = rendered(ROOT / "jobs" / "covid_xray.yaml", "x86-v100")
    text = "\n".join(slurm.values())
    assert (
        "#SBATCH --gpus-per-node=4" in text
        and "srun " in text
        and "--dependency=afterok:" in slurm["scripts/submit.sh"]
    )
    assert (
        "#SBATCH --array=0-7" in slurm["scripts/ingest.sbatch"]
        and "#SBATCH --signal=B:USR1@90" in slurm["scripts/train.sbatch"]
    )
    p9 = rendered(ROOT / "jobs" / "covid_xray.yaml", "power9-slurm")
    assert "#SBATCH --gres=gpu:4" in p9["scripts/train.sbatch"]


def test_sweeps_array_on_slurm_packed_on_summit() -> None:
    slurm = rendered(ROOT / "jobs" / "covid_sweep.yaml", "x86-v100")["scripts/train.sbatch"]
    assert "#SBATCH --array=0-3%4" in slurm
    summit = rendered(ROOT / "jobs" / "covid_sweep.yaml", "summit")["scripts/train.lsf"]
    assert "#BSUB -nnodes 4" in summit
    assert summit.count("jsrun ") == 1
    assert 'xvhpc_pool "$first" "$last" 4' in summit
    assert "wait -n" in summit  # a slot pool: a freed slot starts the next point (N8)
    submit = rendered(ROOT / "jobs" / "covid_sweep.yaml", "summit")["scripts/submit.sh"]
    assert 'bsub -w "ended(${job_train})" < scripts/evaluate.lsf' in submit  # N10
    slurm_submit = rendered(ROOT / "jobs" / "covid_sweep.yaml", "x86-v100")["scripts/submit.sh"]
    assert "--dependency=afterany:${job_train}" in slurm_submit


def _all_scripts() -> list[tuple[str, str, str, str]]:
    out = []
    for job in JOBS:
        for site in SITES:
            for rel, text in rendered(job, site).items():
                if rel.startswith("scripts/"):
                    out.append((job.stem, site, rel, text))
    return out


def test_every_script_passes_bash_n_and_shellcheck(tmp_path: Path) -> None:
    require("shellcheck", "static checks of generated scripts")
    scripts = _all_scripts()
    assert len(scripts) >= 40
    for job, site, rel, text in scripts:
        path = tmp_path / f"{job}-{site}-{Path(rel).name}"
        path.write_text(text)
        syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{path.name}: {syntax.stderr}"
        check = subprocess.run(
            ["shellcheck", "-s", "bash", "-S", "warning", str(path)], capture_output=True, text=True
        )
        assert check.returncode == 0, f"{path.name}:\n{check.stdout}"


HOSTILE = "x'; touch {marker}; ' $(touch {marker}) `touch {marker}` \"; touch {marker}"


def test_hostile_names_and_paths_never_execute(tmp_path: Path, demo_data: Path) -> None:
    marker = tmp_path / "pwned"
    # path parts cannot hold "/": commands there would touch "pwned" in the working directory
    evil_dir = tmp_path / "data $(touch pwned) `touch pwned`; 'q' \"dq\""
    os.symlink(demo_data, evil_dir)
    name = HOSTILE.format(marker=marker) + "; touch /tmp/pwned"
    spec = tiny_spec(
        tmp_path / "evil spec.yaml",
        evil_dir,
        name=name,
        train={"max_iterations": 4, "val_every": 4},
        resources={"account": "abc-1"},
    )
    if Path("/tmp/pwned").exists():
        Path("/tmp/pwned").unlink()
    out = tmp_path / "runs $(touch pwned); `touch pwned` 'x'"
    for site in ("local-slurm", "summit", "x86-v100"):
        xv("compile", str(spec), "--site", site, "--out", str(tmp_path / f"c-{site}"))
        for script in (tmp_path / f"c-{site}" / "scripts").iterdir():
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    xv("run", str(spec), "--out", str(out), cwd=tmp_path)
    assert (out / "model" / "meta.json").exists() and (out / "report.html").exists()
    assert not marker.exists() and not Path("/tmp/pwned").exists()
    assert not list(tmp_path.rglob("pwned")), "a hostile command ran"


FAKE_LSF = r'''#!{python}
"""Stand-in for an LSF command: records its argv and stdin, answers as LSF documents."""
import json, os, sys
state = os.environ["FAKE_LSF_STATE"]
name = os.path.basename(sys.argv[0])
stdin = sys.stdin.read() if name == "bsub" else ""
with open(os.path.join(state, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps({{"cmd": name, "argv": sys.argv[1:], "stdin": stdin}}) + "\n")
counter = os.path.join(state, "next_id")
if name == "bsub":
    n = int(open(counter).read()) if os.path.exists(counter) else 1000
    open(counter, "w").write(str(n + 1))
    print(f"Job <{{n}}> is submitted to queue <batch>.")
elif name == "bjobs":
    ids = sorted(int(a) for a in sys.argv[1:] if a.isdigit())
    records = []
    for i in ids:
        if i == ids[0]:  # an array of 3 elements, told apart by jobindex only (LSF 10.1 -o)
            records += [{{"JOBID": str(i), "JOBINDEX": str(k), "STAT": "DONE", "EXIT_CODE": ""}} for k in (1, 2, 3)]
        else:
            stat = "RUN" if i == ids[1] else "PEND"
            records.append({{"JOBID": str(i), "JOBINDEX": "0", "STAT": stat, "EXIT_CODE": ""}})
    print(json.dumps({{"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}}))
elif name == "bkill":
    for i in sys.argv[1:]:
        print(f"Job <{{i}}> is being terminated")
'''


@pytest.fixture
def fake_lsf(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """Recording stand-ins for bsub/bjobs/bkill on PATH: (env, state folder, run folder)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for cmd in ("bsub", "bjobs", "bkill"):
        path = bin_dir / cmd
        path.write_text(FAKE_LSF.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LSF_STATE": str(state),
        "XVHPC_SUBMIT_INTERVAL": "0",
    }
    return env, state, tmp_path / "run"


def _lsf_submit(env: dict[str, str], run: Path, *extra: str, check: bool = True):
    """``xvhpc submit`` of covid_xray on summit through the stand-ins."""
    return xv(
        "submit",
        str(ROOT / "jobs" / "covid_xray.yaml"),
        "--site",
        "summit",
        "--out",
        str(run),
        *extra,
        env=env,
        check=check,
    )


def _calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def test_lsf_dry_run_submits_nothing(fake_lsf) -> None:
    env, state, run = fake_lsf
    dry = _lsf_submit(env, run, "--dry-run")
    assert "bsub -w 'done(<ingest>)' -ti < scripts/train.lsf" in dry.stdout
    assert not (state / "calls.jsonl").exists(), "--dry-run must submit nothing"


def test_lsf_submit_chains_jobs_and_records_their_ids(fake_lsf) -> None:
    env, state, run = fake_lsf
    _lsf_submit(env, run)
    calls = _calls(state)
    bsubs = [c for c in calls if c["cmd"] == "bsub"]
    assert [c["argv"] for c in bsubs] == [
        [],
        ["-w", "done(1000)", "-ti"],
        ["-w", "done(1001)", "-ti"],
        ["-w", "done(1002)", "-ti"],
    ]
    # ingest: one job of MPI ranks on compute nodes (8 shards: 2 nodes x 4 ranks), merged by rank 0
    assert '#BSUB -J "covid-xray-ingest"' in bsubs[0]["stdin"]
    assert (
        "jsrun -n8 -r4 -a1 -g0 -c10 -bpacked:10 --smpiargs=-disable_gpu_hooks" in bsubs[0]["stdin"]
    )
    # train: OLCF's DL layout, one resource set per node holding its 4 asked GPUs
    assert (
        "jsrun -n2 -r1 -a4 -g4 -c42 -bpacked:10 --smpiargs=-disable_gpu_hooks" in bsubs[1]["stdin"]
    )
    jobs = json.loads((run / "jobs.json").read_text())
    assert {k: s["job_id"] for k, s in jobs["steps"].items()} == {
        "ingest": "1000",
        "train": "1001",
        "evaluate": "1002",
        "report": "1003",
    }


def test_lsf_live_jobs_refuse_a_second_submit_and_status_reads_bjobs(fake_lsf) -> None:
    env, state, run = fake_lsf
    _lsf_submit(env, run)
    again = _lsf_submit(env, run, check=False)
    assert again.returncode == 1 and "already has live jobs" in again.stderr
    status = xv("status", str(run), "--json", env=env)
    report = json.loads(status.stdout)
    states = {k: v["state"] for k, v in report.items()}
    assert states == {
        "ingest": "COMPLETED",
        "train": "RUNNING",
        "evaluate": "PENDING",
        "report": "PENDING",
    }
    assert sorted(report["ingest"]["tasks"]) == ["1000_0", "1000_1", "1000_2"]
    bjobs = [c for c in _calls(state) if c["cmd"] == "bjobs"]
    assert bjobs
    for c in bjobs:
        assert c["argv"][:4] == ["-a", "-o", "jobid jobindex stat exit_code", "-json"]
        assert sorted(c["argv"][4:]) == ["1000", "1001", "1002", "1003"]


def test_lsf_cancel_bkills_every_job(fake_lsf) -> None:
    env, state, run = fake_lsf
    _lsf_submit(env, run)
    xv("cancel", str(run), env=env)
    last = _calls(state)[-1]
    assert last["cmd"] == "bkill"
    assert sorted(last["argv"]) == ["1000", "1001", "1002", "1003"]


def test_cancel_refuses_a_jobs_json_whose_ids_are_options(fake_lsf) -> None:
    """A shared run dir's jobs.json edited to hold ``--user=me`` (bkill/scancel would take it
    as a flag and cancel every job of the user): refused, nothing run."""
    env, state, run = fake_lsf
    _lsf_submit(env, run)
    jobs = json.loads((run / "jobs.json").read_text())
    jobs["steps"]["train"]["job_id"] = "-u all"
    (run / "jobs.json").write_text(json.dumps(jobs))
    before = len(_calls(state))
    proc = xv("cancel", str(run), env=env, check=False)
    assert proc.returncode != 0 and "'-u all' is not a job id" in proc.stderr
    assert "Traceback" not in proc.stderr and len(_calls(state)) == before


def test_submit_retries_transient_scheduler_errors(tmp_path: Path) -> None:
    """A controller time-out is retried; a real error is not."""
    from xvhpc.backends.commands import CommandRunner, SchedulerCommandError

    counter = tmp_path / "count"
    fake = tmp_path / "sbatch"
    fake.write_text(
        f"#!/bin/bash\nn=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}\n"
        'if [ "$n" -lt 2 ]; then echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1; fi\n'
        "echo 4242\n"
    )
    fake.chmod(0o755)
    runner = CommandRunner(retries=3, min_interval_s=0.0, backoff_s=0.01)
    assert runner.run([str(fake)]).strip() == "4242"
    assert counter.read_text().strip() == "3"
    fake.write_text(
        "#!/bin/bash\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n"
    )
    with pytest.raises(SchedulerCommandError, match="invalid partition"):
        runner.run([str(fake)])
    assert counter.read_text().strip() == "3"


def _site_variant(tmp_path: Path, base: str, **changes) -> Path:
    import yaml

    data = yaml.safe_load((ROOT / "site_configs" / f"{base}.yaml").read_text())
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}  # None: the key left out
    path = tmp_path / f"{base}-variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_launcher_renders_its_command(tmp_path: Path) -> None:
    job = ROOT / "jobs" / "covid_xray.yaml"  # 2 nodes x 4 GPUs
    all_gpus = rendered(job, "summit")["scripts/train.lsf"]
    assert "jsrun -n2 -r1 -a4 -g4 -c42 -bpacked:10 --smpiargs=-disable_gpu_hooks " in all_gpus
    per_gpu = rendered_site(
        job, _site_variant(tmp_path, "summit", launcher_options={"mode": "rank_per_gpu"})
    )
    assert "jsrun -n8 -r4 -a1 -g1 -c10 -bpacked:10 " in per_gpu["scripts/train.lsf"]
    mpirun = rendered_site(job, _site_variant(tmp_path, "x86-v100", launcher="mpirun"))[
        "scripts/train.sbatch"
    ]
    assert "mpirun -np 8 --map-by ppr:4:node --bind-to none " in mpirun
    torchrun = rendered_site(job, _site_variant(tmp_path, "x86-v100", launcher="torchrun"))[
        "scripts/train.sbatch"
    ]
    assert (
        '-m torch.distributed.run --nproc-per-node=4 --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint="${MASTER_ADDR}:${MASTER_PORT}" -m xvhpc train'
        in torchrun
    )
    srun = rendered(job, "x86-v100")["scripts/train.sbatch"]
    assert "#SBATCH --gpus-per-node=4\n" in srun  # GPUs per node, never per task (N1)
    assert (
        'srun --nodes=2 --ntasks-per-node=4 --ntasks=8 --cpus-per-task=10 --kill-on-bad-exit=1 "$XVHPC_PY"'
        in srun
    )
    bound = rendered_site(
        job,
        _site_variant(
            tmp_path,
            "x86-v100",
            launcher_options={"binding": {"gpu": "closest", "cpu": "cores", "threads_per_core": 1}},
        ),
    )["scripts/train.sbatch"]
    assert "--gpu-bind=closest --cpu-bind=cores --threads-per-core=1 " in bound
    default_jsrun = rendered_site(job, _site_variant(tmp_path, "summit", launcher_options=None))
    assert "jsrun -n2 -r1 -a4 -g4 " in default_jsrun["scripts/train.lsf"]  # all GPUs per set


def test_a_bad_binding_names_the_valid_choices(tmp_path: Path) -> None:
    site = _site_variant(tmp_path, "x86-v100", binding={"gpu": "everywhere"})
    with pytest.raises(SpecError, match=r"binding\.gpu.*must be none, closest"):
        load_site(str(site))


def rendered_site(job: Path, site_file: Path) -> dict[str, str]:
    loaded, site = load_spec(job), load_site(str(site_file))
    plan = build_plan(loaded, site, "/scratch/runs/x")
    return render_plan(plan, site)


def test_rendezvous_ports_stay_below_the_ephemeral_range() -> None:
    """One formula (xvhpc/ports.py) in every script and environment; with every packed slot
    added it stays below Linux's ephemeral ports (32768+), where a node's own outgoing
    connections could already hold it (issue 22 N16)."""
    from xvhpc import ports
    from xvhpc.runtime.whoami import detect_environment

    assert max(ports.master_port(j) for j in range(100_000)) + 1 + ports.SLOTS < 32768
    slurm = rendered(ROOT / "jobs" / "covid_xray.yaml", "x86-v100")["scripts/train.sbatch"]
    assert f"export MASTER_PORT={ports.master_port_shell('SLURM_JOB_ID')}\n" in slurm
    summit = rendered(ROOT / "jobs" / "covid_sweep.yaml", "summit")["scripts/train.lsf"]
    assert f"local base_port=${{MASTER_PORT:-{ports.BASE}}}" in summit
    env = {"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}
    assert detect_environment({**env, "SLURM_JOB_ID": "123456"}).master_port == ports.master_port(
        123456
    )


def test_cpu_steps_leave_the_gpu_partition_with_their_own_account(tmp_path: Path) -> None:
    """N16 and a Perlmutter-style split of CPU and GPU hours: steps without GPUs go to the
    site's CPU partition/constraint, account and QoS; training keeps the GPU ones."""
    job = {"constraint": "gpu", "qos": "regular", "cpu_constraint": "cpu", "cpu_account": "m1234",
           "cpu_qos": "shared", "cpu_queue": "cpu"}  # fmt: skip
    files = rendered_site(
        ROOT / "jobs" / "covid_xray.yaml", _site_variant(tmp_path, "x86-v100", job=job)
    )
    ingest, train = files["scripts/ingest.sbatch"], files["scripts/train.sbatch"]
    for line in ("--account=m1234", "--constraint=cpu", "--qos=shared", "--partition=cpu"):
        assert f"#SBATCH {line}\n" in ingest and f"#SBATCH {line}\n" not in train
    for line in ("--account=ABC123", "--constraint=gpu", "--qos=regular", "--partition=gpu"):
        assert f"#SBATCH {line}\n" in train
