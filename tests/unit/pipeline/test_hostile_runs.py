"""Hostile input and faults (issue 11, cases 7-9) against a run directory's steps: corrupt shards,
run-dir locks, and clear one-line errors for bad arguments, damaged files and a full or read-only
disk. One test per case; each names the case of the issue it covers (cases 1-6: tests/unit/spec,
tests/unit/data and tests/unit/serve, test_hostile_*.py).

Fast cases run in-process with a timeout (pytest-timeout), never a timed assertion: a fix that
regresses shows as a timeout, a slow machine does not fail them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_spec, xv
from tests.hostile import no_traceback, two_classes

# ---------------------------------------------------------------------------------------------
# 7. shard corruption; 8. run-dir locks; 9. clear errors


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("ingested")
    root = two_classes(work / "data", per_class=6)
    spec = tiny_spec(work / "s.yaml", root)
    xv("compile", str(spec), "--out", str(work / "run"))
    xv("ingest", "--run-dir", str(work / "run"), "--shard", "all", "--merge", timeout=300)
    return work / "run"


@pytest.fixture
def run(ingested: Path, tmp_path: Path) -> Path:
    """A private copy of the ingested run (paths inside it stay absolute to the data)."""
    copy = tmp_path / "run"
    shutil.copytree(ingested, copy, ignore=shutil.ignore_patterns("locks"))
    plan = json.loads((copy / "plan.json").read_text())
    plan["run_dir"] = str(copy)
    (copy / "plan.json").write_text(json.dumps(plan))
    return copy


def corrupt(path: Path) -> None:
    """Overwrite bytes inside the file, keeping its size (what a bad block or a stray writer
    does)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in [*range(middle, middle + 64), *range(len(data) - 200, len(data) - 100)]:
        data[i] ^= 0xFF  # every byte changes (fixed values may equal what is there: padding)
    path.write_bytes(bytes(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_shard_is_written_again_by_ingest(run: Path) -> None:
    shard = run / "shards" / "shard-00000.h5"
    good = json.loads(shard.with_suffix(".json").read_text())["sha256"]
    corrupt(shard)
    proc = xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge", timeout=300)
    assert "does not match the sha256" in proc.stderr
    assert sha256(shard) == good  # written again: the same bytes as the first time


def test_corrupt_shard_stops_training_with_its_name(run: Path) -> None:
    shard = run / "shards" / "shard-00001.h5"
    corrupt(shard)
    proc = xv("train", "--run-dir", str(run), "--max-iterations", "1", check=False, timeout=300)
    assert proc.returncode != 0
    assert f"{shard} does not match the sha256" in proc.stderr
    assert "--shard 1" in proc.stderr
    no_traceback(proc)


@pytest.mark.timeout(30)
def test_index_verifies_each_shard_once_per_process(run: Path, monkeypatch) -> None:
    from xvhpc.data import dataset, shards

    calls: list[str] = []
    real = shards.sha256_file
    monkeypatch.setattr(shards, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    shards._digests.clear()
    dataset.load_index(run, "train")
    dataset.load_index(run, "val")
    assert sorted(calls) == sorted(str(p) for p in (run / "shards").glob("*.h5"))
    calls.clear()
    shards._digests.clear()
    monkeypatch.setenv("RANK", "1")  # the job's other ranks leave the check to rank 0
    dataset.load_index(run, "train")
    assert calls == []


HOLD = """
import sys, time
from pathlib import Path
from xvhpc import lock
root, kind, parts = Path(sys.argv[1]), sys.argv[2], [p for p in sys.argv[3:]]
if kind == "run":
    ctx = lock.exclusive_run(root, ["run", "spec.yaml"])
else:
    ctx = lock.step(root, [(p.lstrip("~"), p.startswith("~")) for p in parts], ["ingest", "--shard", "0"])
with ctx:
    print("held", flush=True)
    sys.stdin.read()
"""


def holder(root: Path, kind: str, *parts: str) -> subprocess.Popen:
    """A process holding locks until its stdin closes (``~name``: shared)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), kind, *parts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def test_second_writer_of_a_shard_is_refused_naming_the_holder(run: Path) -> None:
    hold = holder(run, "step", "~ingest", "shard-00000")
    try:
        proc = xv("ingest", "--run-dir", str(run), "--shard", "0", check=False, timeout=120)
        assert proc.returncode == 5
        assert f"pid {hold.pid} on host {socket.gethostname()}" in proc.stderr
        assert "shard-00000.lock" in proc.stderr
        no_traceback(proc)
        other = xv("ingest", "--run-dir", str(run), "--shard", "1", check=False, timeout=120)
        assert other.returncode == 0, other.stderr  # array tasks of other shards run alongside
        whole = xv("ingest", "--run-dir", str(run), "--shard", "all", check=False, timeout=120)
        assert whole.returncode == 5  # --shard all writes every shard
    finally:
        release(hold)


def test_a_running_pipeline_refuses_a_second_run_and_its_steps(run: Path, tmp_path: Path) -> None:
    hold = holder(run, "run")
    try:
        for args in (
            ("ingest", "--run-dir", str(run), "--merge"),
            ("train", "--run-dir", str(run), "--max-iterations", "1"),
            ("compile", str(run / "spec.yaml"), "--out", str(run)),
        ):
            proc = xv(*args, check=False, timeout=300)
            assert proc.returncode == 5, (args, proc.stderr)
            assert "run.lock is held by `xvhpc run spec.yaml`" in proc.stderr
    finally:
        release(hold)


def test_lock_of_a_killed_holder_is_released(run: Path) -> None:
    hold = holder(run, "step", "~ingest", "merge")
    hold.send_signal(signal.SIGKILL)
    hold.wait(timeout=60)
    proc = xv("ingest", "--run-dir", str(run), "--merge", check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_only_rank_0_of_a_training_job_locks() -> None:
    from xvhpc.lock import launch_rank

    assert launch_rank({}) == 0
    assert launch_rank({"RANK": "3"}) == 3
    assert launch_rank({"OMPI_COMM_WORLD_RANK": "2"}) == 2
    assert launch_rank({"SLURM_PROCID": "1"}) == 0  # the batch script itself, not an srun task
    assert launch_rank({"SLURM_PROCID": "1", "SLURM_STEP_ID": "0"}) == 1


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("ingest", "--shard", "abc"), "'abc' is not a shard index"),
        (("ingest", "--shard", "-1"), "is not a shard index"),
        (("train", "--max-iterations", "0"), "0 is below 1"),
    ],
)
def test_bad_step_arguments_are_one_line(run: Path, args: tuple, fragment: str) -> None:
    proc = xv(args[0], "--run-dir", str(run), *args[1:], check=False, timeout=120)
    assert proc.returncode == 2 and fragment in proc.stderr
    no_traceback(proc)


def test_corrupt_jobs_json_is_a_clear_error(run: Path) -> None:
    (run / "jobs.json").write_text('{"scheduler": "local", "steps": {')
    proc = xv("status", str(run), check=False, timeout=120)
    assert proc.returncode == 2 and f"{run / 'jobs.json'} is damaged" in proc.stderr
    no_traceback(proc)


def test_corrupt_manifest_is_a_clear_error(run: Path) -> None:
    (run / "manifest.json").write_bytes(b"\xff\xfe garbage")
    proc = xv("train", "--run-dir", str(run), "--max-iterations", "1", check=False, timeout=300)
    assert proc.returncode != 0 and "manifest.json is damaged" in proc.stderr
    no_traceback(proc)


def test_corrupt_checkpoint_is_a_clear_error(run: Path) -> None:
    checkpoint = run / "train" / "0" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"PK\x03\x04 not really a zip" + os.urandom(500))
    proc = xv("train", "--run-dir", str(run), "--max-iterations", "1", check=False, timeout=300)
    assert proc.returncode != 0 and str(checkpoint) in proc.stderr
    no_traceback(proc)


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def test_export_to_a_read_only_directory_is_a_clear_error(bundle_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "ro"
    _mount_tmpfs(target, "ro,size=1m")
    try:
        proc = xv("export", str(bundle_dir), "--out", str(target / "m.pt"), check=False)
    finally:
        subprocess.run(["umount", str(target)], check=False)
    assert proc.returncode == 2 and "Read-only file system" in proc.stderr
    no_traceback(proc)


def test_disk_full_during_ingest_is_a_clear_error_and_leaves_no_temp(
    ingested: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    _mount_tmpfs(full, "size=1m")
    try:
        data = Path(json.loads((ingested / "plan.json").read_text())["data_source"])
        spec = tiny_spec(tmp_path / "big.yaml", data, data={"image_size": 256, "channels": 3})
        xv("compile", str(spec), "--out", str(full / "run"))
        proc = xv("ingest", "--run-dir", str(full / "run"), "--shard", "all", check=False)
        leftovers = list((full / "run" / "shards").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(full)], check=False)
    assert proc.returncode == 2 and "No space left on device" in proc.stderr, proc.stderr
    assert not leftovers
    no_traceback(proc)


def test_files_get_the_umask_not_0600(tmp_path: Path) -> None:
    from xvhpc.util import atomic_path, write_json_atomic

    old = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "checkpoint.pt") as tmp:
            tmp.write_bytes(b"x")
        write_json_atomic(tmp_path / "progress.json", {})
        root = two_classes(tmp_path / "data")
        spec = tiny_spec(tmp_path / "s.yaml", root, data={"shards": 1})
        xv("compile", str(spec), "--out", str(tmp_path / "run"))
        xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    finally:
        os.umask(old)
    for path in (
        tmp_path / "checkpoint.pt",
        tmp_path / "progress.json",
        tmp_path / "run" / "shards" / "shard-00000.h5",
        tmp_path / "run" / "manifest.json",
    ):
        assert path.stat().st_mode & 0o777 == 0o664, path


def test_logs_xvhpc_appends_to_are_never_written_through_a_link(tmp_path: Path) -> None:
    """Finding 3, the appended files: a link planted at a point's metrics log (or at a local
    step's log) is refused with one line; the file it points at is not touched."""
    import os

    from xvhpc.pipeline.train import append_metrics
    from xvhpc.util import UserError, open_append

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    planted = tmp_path / "metrics.jsonl"
    os.symlink(victim, planted)
    with pytest.raises(UserError, match="is a symbolic link; a log xvhpc appends to must be"):
        append_metrics(planted, {"iteration": 1})
    fifo = tmp_path / "train-local.out"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        open_append(fifo, binary=True)
    assert victim.read_text() == "keep me\n"
    fine = tmp_path / "ok.jsonl"
    append_metrics(fine, {"iteration": 1})
    append_metrics(fine, {"iteration": 2})
    assert fine.read_text().count("\n") == 2
