"""Who a process is in its job (xvhpc/runtime/whoami.py over each backend's environment): torchrun,
srun, Open MPI and jsrun detected from their variables, the launcher before the scheduler, a missing
variable named with a hint, array indices, CPUs, MPI ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xvhpc.backends.base import EnvironmentError_
from xvhpc.runtime.whoami import batch_task, detect_environment

TORCHRUN = {
    "RANK": "3",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "node7",
    "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "abc",
}


SRUN = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_JOB_NODELIST": "gpu[01-02]",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "17000",
}


OMPI = {
    "OMPI_COMM_WORLD_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29400",
}


JSRUN = {
    "JSM_NAMESPACE_RANK": "7",
    "JSM_NAMESPACE_LOCAL_RANK": "1",
    "JSM_NAMESPACE_SIZE": "12",
    "OMPI_COMM_WORLD_RANK": "7",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_SIZE": "12",
    "LSB_JOBID": "99",
    "MASTER_PORT": "15099",
}


def test_detects_torchrun() -> None:
    info = detect_environment(TORCHRUN)
    assert (
        info.environment,
        info.rank,
        info.local_rank,
        info.world_size,
        info.master_addr,
        info.master_port,
    ) == ("torchrun", 3, 1, 4, "node7", 29500)


def test_detects_srun() -> None:
    info = detect_environment(SRUN)
    assert (info.environment, info.rank, info.local_rank, info.world_size, info.master_addr) == (
        "slurm",
        5,
        1,
        8,
        "10.0.0.1",
    )


def test_detects_open_mpi() -> None:
    info = detect_environment(OMPI)
    assert (info.environment, info.rank, info.world_size, info.master_port) == (
        "openmpi",
        1,
        2,
        29400,
    )


def test_detects_jsrun(tmp_path: Path) -> None:
    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch3\n" + "h41n01\n" * 6 + "h41n02\n" * 6)  # launch node first
    info = detect_environment(
        {**JSRUN, "LSB_DJOB_RANKFILE": str(rankfile), "MASTER_ADDR": "h41n01"}
    )
    assert info.environment == "jsrun"
    assert (info.rank, info.local_rank, info.world_size) == (7, 1, 12)


def test_detects_a_single_process() -> None:
    assert detect_environment({}).environment == "single"


def test_jsrun_master_is_first_compute_host_not_launch_node(tmp_path: Path) -> None:
    from xvhpc.backends.lsf.environment import JsrunEnvironment

    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch3\nh41n01\nh41n01\nh41n02\n")
    assert JsrunEnvironment.first_compute_host({"LSB_DJOB_RANKFILE": str(rankfile)}) == "h41n01"


def test_detection_order_prefers_launcher_over_scheduler() -> None:
    assert detect_environment({**SRUN, **TORCHRUN}).environment == "torchrun"  # srun → torchrun
    assert detect_environment({**OMPI, **JSRUN}).environment == "jsrun"  # jsrun sets OMPI_* too
    assert detect_environment({**SRUN, **OMPI}).environment == "openmpi"  # mpirun in an allocation


def test_missing_slurm_variable_names_it_and_hints() -> None:
    env = {k: v for k, v in SRUN.items() if k != "MASTER_ADDR"}
    with pytest.raises(EnvironmentError_) as info:
        detect_environment(env)
    assert "MASTER_ADDR is not set" in str(info.value)
    assert "HINT:" in str(info.value)
    assert "scontrol show hostnames" in str(info.value)


def test_missing_torchrun_variable_names_it_and_hints() -> None:
    env = {k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"}
    with pytest.raises(
        EnvironmentError_, match="MASTER_PORT is not set. HINT: launch with `torchrun"
    ):
        detect_environment(env)


def test_array_index_slurm_counts_from_zero() -> None:
    assert batch_task({"SLURM_ARRAY_TASK_ID": "3"}).array_index == 3


def test_array_index_lsf_counts_from_one() -> None:
    assert batch_task({"LSB_JOBINDEX": "3"}).array_index == 2


def test_no_array_index_outside_an_array() -> None:
    assert batch_task({"LSB_JOBINDEX": "0"}).array_index is None  # LSF: not an array job
    assert batch_task({}).array_index is None


def test_cpus_are_the_schedulers_grant() -> None:
    assert batch_task({"SLURM_CPUS_PER_TASK": "6"}).cpus == 6
    assert batch_task({"LSB_DJOB_NUMPROC": "42"}).cpus == 42


def test_no_mpi_rank_without_an_mpi_launcher() -> None:
    task = batch_task({})
    assert (task.mpi_rank, task.mpi_size, task.comm) == (0, 1, None)


def test_jsrun_without_a_working_mpi4py_stops_with_a_clear_error() -> None:
    """Summit needs mpi4py and says so (issue 22 N2): without it 8 ingest ranks would each
    believe they are rank 0 of 1, and packed points would wait on node 1 for 600 s."""
    jsrun = {"JSM_NAMESPACE_SIZE": "8", "JSM_NAMESPACE_RANK": "3", "JSM_NAMESPACE_LOCAL_RANK": "3"}
    code = (
        "import sys, json; from xvhpc.runtime.whoami import batch_task\n"
        "from xvhpc.runtime.whoami import detect_environment\n"
        "if sys.argv[1] == 'absent': sys.modules['mpi4py'] = None\n"
        "for f in (batch_task, detect_environment):\n"
        "    try: f(json.loads(sys.argv[2])); print('no error')\n"
        "    except Exception as e: print(type(e).__name__, e)\n"
    )
    for case, said in (("absent", "mpi4py does not import"), ("singleton", "mpi4py sees 1 rank")):
        out = subprocess.run(
            [sys.executable, "-c", code, case, json.dumps(jsrun)],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.splitlines()
        assert len(out) == 2, out
        for line in out:
            assert line.startswith("EnvironmentError_ ") and "HINT:" in line, line
            assert said in line or "mpi4py" in line, line
        assert said in out[0], out
