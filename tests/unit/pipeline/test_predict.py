"""``xvhpc predict``: batch inference over 200 files (some bad) as a local run and as a 4-task
array on the real local Slurm; identical predictions.csv; a killed chunk is the only one rerun."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import predict, xv

BAD = {
    "bad/empty.png": "zero-byte file",
    "bad/notes.png": "not a PNG",
    "bad/readme.txt": "unsupported or non-image file (.txt)",
    "bad/trunc.jpg": "truncated JPEG",
    "bad/y.gif": "corrupt GIF: cannot identify image file <_io.BytesIO object>",  # no address
}


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def chunk_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "chunks").glob("chunk-*.csv"))}


def test_local_predictions_cover_every_file(local_run: Path, trained_run: Path) -> None:
    classes = json.loads((trained_run / "model" / "meta.json").read_text())["classes"]
    found = rows(local_run)
    assert len(found) == 200
    assert len(chunk_times(local_run)) == 4
    by_path = {r["path"]: r for r in found}
    for path, reason in BAD.items():
        assert by_path[path]["skipped"].startswith(reason), by_path[path]
        assert by_path[path]["decision"] == ""
    good = [r for r in found if not r["skipped"]]
    assert len(good) == 195
    assert {f"scan{i}.dcm" for i in range(4)} <= {r["path"] for r in good}  # DICOM in
    for r in good:
        probs = [float(r[f"p_{c}"]) for c in classes]
        assert abs(sum(probs) - 1) < 1e-4
        assert r["decision"] == classes[int(np.argmax(probs))]  # no operating point: argmax
    summary = json.loads((local_run / "summary.json").read_text())
    assert summary["files"] == 200 and summary["predicted"] == 195 and summary["skipped"] == 5


def test_status_and_logs_work_on_a_predict_run(local_run: Path) -> None:
    status = xv("status", str(local_run), "--json").stdout
    assert {k: v["state"] for k, v in json.loads(status).items()} == {
        "predict": "COMPLETED",
        "merge": "COMPLETED",
    }
    assert "chunk 0: 45 predicted, 5 skipped" in xv("logs", str(local_run), "predict").stdout


def test_heatmaps_and_csv_source(trained_run: Path, images: Path, tmp_path: Path) -> None:
    listing = images / "list.csv"
    listing.write_text("path,note\nscan0.dcm,x\nbatch0/img001.png,y\nmissing.png,z\n")
    try:
        predict(trained_run, listing, tmp_path / "out", "--heatmaps")
    finally:
        listing.unlink()
    found = {r["path"]: r["skipped"] for r in rows(tmp_path / "out")}
    assert found == {
        "scan0.dcm": "",
        "batch0/img001.png": "",
        "missing.png": "file not found (CSV line 4)",
    }
    maps = sorted(p.name for p in (tmp_path / "out" / "heatmaps").iterdir())
    assert maps == ["batch0__img001.png.png", "scan0.dcm.png"]
    assert Image.open(tmp_path / "out" / "heatmaps" / "scan0.dcm.png").size == (40, 40)


def test_cluster_sites_compile_on_the_login_side_without_torch(
    trained_run: Path, images: Path, tmp_path: Path
) -> None:
    """An array over the chunks and a merge after it, for Slurm and LSF; nothing heavy imported."""
    outs = {site: tmp_path / site for site in ("x86-v100", "summit")}
    calls = "; ".join(
        f"main(['predict', {str(trained_run)!r}, '--data', {str(images)!r}, '--out', "
        f"{str(out)!r}, '--site', {site!r}, '--chunk-size', '50', '--dry-run'])"
        for site, out in outs.items()
    )
    code = (
        f"import sys; from xvhpc.cli import main; {calls}; "
        "print('HEAVY', [m for m in ('torch', 'torchvision', 'h5py', 'pydicom') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout
    assert "#SBATCH --array=0-3" in (outs["x86-v100"] / "scripts" / "predict.sbatch").read_text()
    assert "--dependency=afterok:<predict>" in proc.stdout
    lsf = (outs["summit"] / "scripts" / "predict.lsf").read_text()
    # Summit: the 4 chunks on the 6 GPUs of one node, one rank each (N6), not 4 jobs of 1 GPU
    assert "#BSUB -nnodes 1" in lsf and "[1-" not in lsf
    assert "jsrun -n1 -r1 -a6 -g6 -c42 -bpacked:7 " in lsf
    assert '--chunk "$XVHPC_INDEX" --per-job 6' in lsf
    assert "bsub -w 'done(<predict>)'" in proc.stdout


def test_a_chunk_of_another_job_is_never_reused(
    trained_run: Path, images: Path, tmp_path: Path
) -> None:
    """A task of an earlier job that finishes after OUT was given a new job (other files)
    leaves a chunk under that job's key: the new job computes its own chunk."""
    out = tmp_path / "out"
    listing = images / "two.csv"
    listing.write_text("path\nscan0.dcm\nscan1.dcm\n")
    try:
        predict(trained_run, listing, out, "--site", "x86-v100", "--dry-run")  # compiles only
    finally:
        listing.unlink()
    key = json.loads((out / "predict.json").read_text())["key"]
    (out / "chunks").mkdir()
    stale = "path,p_x,decision,skipped\nother.png,1.0,x,\n"
    (out / "chunks" / "chunk-00000-0123456789abcdef.csv").write_text(stale)
    (out / "chunks" / "chunk-00000.csv").write_text(stale)
    log = xv("predict-chunk", "--run-dir", str(out), "--chunk", "0").stderr
    assert "chunk 0: 2 predicted, 0 skipped" in log
    mine = (out / "chunks" / f"chunk-00000-{key}.csv").read_text()
    assert "scan0.dcm" in mine and "other.png" not in mine


def test_bad_source_is_a_clear_error(trained_run: Path, tmp_path: Path) -> None:
    proc = predict(trained_run, tmp_path / "nowhere", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "nowhere does not exist" in proc.stderr and "Traceback" not in proc.stderr
    listing = tmp_path / "list.csv"
    listing.write_text("file\nx.png\n")
    proc = predict(trained_run, listing, tmp_path / "out", check=False)
    assert proc.returncode == 2 and f"{listing}: column 'path' not found" in proc.stderr


def test_killed_local_run_reruns_only_missing_chunks(
    trained_run: Path, images: Path, local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "xvhpc", "predict", str(trained_run), "--data", str(images)]
    proc = subprocess.Popen(
        [*argv, "--out", str(out), "--chunk-size", "50"],
        env={**os.environ, "XVHPC_PYTHON": sys.executable},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not list((out / "chunks").glob("chunk-00001-*.csv")):
            assert proc.poll() is None, "predict ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # xvhpc, the job script and the chunk process
        proc.wait()
    before = chunk_times(out)
    assert not any(n.startswith("chunk-00003") for n in before) and len(before) >= 2
    rerun = predict(trained_run, images, out).stdout
    for name in before:
        assert f"chunk {int(name[6:11])}: already done" in rerun
    after = chunk_times(out)
    assert len(after) == 4
    assert {k: after[k] for k in before} == before  # finished chunks untouched
    assert (out / "predictions.csv").read_bytes() == (local_run / "predictions.csv").read_bytes()


def test_one_rank_per_gpu_predicts_its_own_chunk(
    trained_run: Path, images: Path, tmp_path: Path
) -> None:
    """Element E of a whole-node predict array holds chunks E*G .. E*G+G-1: each rank (as jsrun
    numbers it) predicts its own, and a rank past the last chunk has nothing to do."""
    out = tmp_path / "out"
    predict(trained_run, images, out, "--site", "summit", "--dry-run", "--chunk-size", "2")
    chunks = json.loads((out / "predict.json").read_text())
    total = -(-len(chunks["inputs"]) // 2)
    per_job = 3
    for rank in range(per_job):
        env = {"JSM_NAMESPACE_RANK": str(rank), "JSM_NAMESPACE_LOCAL_RANK": str(rank)}
        xv("predict-chunk", "--run-dir", str(out), "--chunk", "1", "--per-job", str(per_job),
           env=env)  # fmt: skip
    done = sorted(int(p.name.split("-")[1]) for p in (out / "chunks").glob("chunk-*"))
    assert done == [c for c in range(per_job, 2 * per_job) if c < total]
    bad = xv("predict-chunk", "--run-dir", str(out), "--chunk", "0", "--per-job", "0", check=False)
    assert bad.returncode == 2 and "--per-job 0: give 1 or more" in bad.stderr
