"""``xvhpc init``: every demo-data kind and the real figure-1 X-rays' CSV give a spec that
validates (classify's and the X-rays' also run), torch-free; hostile sources get reasons."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import SHARED_DATA, xv
from xvhpc.cli import main
from xvhpc.registry import load_task, task_infos

CXR = SHARED_DATA / "cxr-figure1" / "metadata.csv"
TINY = ["--image-size", "32", "--max-iterations", "4", "--pretrained", "none"]


def _demo(task: str, out: Path, video: bool = False) -> Path:
    """The task's demo data and the source a spec names (its one manifest, else the folder)."""
    args = argparse.Namespace(out=str(out), seed=0, task=task, per_class=8, size=48, video=video)
    assert load_task(task).synth(args) == 0
    manifests = sorted(p for p in out.iterdir() if p.suffix in (".json", ".csv"))
    return manifests[0] if len(manifests) == 1 and task != "segment" else out


def _init(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["init", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("task", "video"),
    [*((t, False) for t in sorted(task_infos())), ("detect", True), ("segment", True)],
)
def test_every_demo_kind_gives_a_spec_that_validates(
    task: str, video: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every demo kind, the labelled video frames of detect and segment included (their
    frames are surveyed from the videos' headers, each video one group)."""
    source = _demo(task, tmp_path / "data", video)
    spec = tmp_path / "spec.yaml"
    code, out, err = _init(str(source), "--out", str(spec), capsys=capsys)
    assert code == 0, err
    assert f"task {task}" in out and "width  min / median / max: 48 / 48 / 48 px" in out
    if video:
        videos = 16 if task == "detect" else 8  # 8 a class for detect's 2 classes; 8 for segment
        assert "formats: video (mp4) " in out and f"{videos} patient/group(s)" in out, out
    text = spec.read_text()
    assert text.count("\n# ") + text.count("  # ") >= 5, text  # the choices say why
    assert yaml.safe_load(text)["task"] == task
    assert main(["validate", str(spec)]) == 0


@pytest.mark.parametrize("task", sorted(task_infos()))
def test_every_demo_kind_s_spec_runs_unchanged(
    task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spec init writes for each demo kind runs as written (only init's own flags make it
    tiny: 32 px, 4 iterations, no pretrained weights): ingest → train → evaluate → report."""
    source = _demo(task, tmp_path / "data")
    spec = tmp_path / "spec.yaml"
    code, _, err = _init(str(source), "--out", str(spec), *TINY, capsys=capsys)
    assert code == 0, err
    proc = xv("run", str(spec), "--out", str(tmp_path / "run"), env={"OMP_NUM_THREADS": "1"})
    metrics = json.loads((tmp_path / "run" / "eval" / "0" / "metrics.json").read_text())
    assert metrics["task"] == task and (tmp_path / "run" / "report.html").is_file(), proc.stdout


def test_classify_rare_classes_get_copies_and_a_tiny_catalog(tmp_path: Path, capsys) -> None:
    """Rare classes get copies (training only); ingest's own catalog plans them. (A classify
    spec of init's runs end to end in the figure-1 test below: one run is enough for CI.)"""
    source = tmp_path / "data"
    _demo("classify", source)
    for extra in sorted((source / "viral").iterdir())[2:]:  # viral: 2 images, 4× fewer
        extra.unlink()
    spec = tmp_path / "spec.yaml"
    code, out, err = _init(str(source), "--out", str(spec), "--arch", "resnet18", *TINY,
                           capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert "viral                         2  ← 4× fewer than the largest class" in out
    data = yaml.safe_load(spec.read_text())
    assert data["data"]["augment"]["viral"] == {"copies": 3, "hflip": True}
    assert "3 flipped copies each, training split only" in spec.read_text()
    assert data["data"]["image_size"] == 32 and data["data"]["resize"] == "squash"
    from xvhpc.spec import load_spec

    data_spec = load_spec(spec).spec.data
    catalog = load_task("classify").catalog(data_spec.source, data_spec)
    planned = [s.copies for s in catalog.samples if s.label == "viral" and s.split == "train"]
    assert planned and set(planned) == {3}


def test_real_xrays_find_the_patient_column_and_run(tmp_path: Path, capsys) -> None:
    """The figure-1 CSV: no path column (images/{patientid}.*), finding is the label,
    patientid the group; the spec validates and runs unchanged at 32 px."""
    spec = tmp_path / "cxr.yaml"
    code, out, err = _init(str(CXR), "--out", str(spec), "--arch", "resnet18", *TINY,
                           capsys=capsys)  # fmt: skip
    assert code == 0, err
    csv = yaml.safe_load(spec.read_text())["data"]["csv"]
    assert csv == {
        "path_pattern": "images/{patientid}.*",
        "label_column": "finding",
        "group_column": "patientid",
    }
    assert "40 labelled image(s), 3 class(es)" in out and "15 unlabelled" in out
    assert "Pneumonia                     2  ← 18× fewer" in out
    assert main(["validate", str(spec)]) == 0
    proc = xv("run", str(spec), "--out", str(tmp_path / "run"), env={"OMP_NUM_THREADS": "1"})
    assert (tmp_path / "run" / "report.html").is_file(), proc.stdout[-2000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["classes"] == ["COVID-19", "No finding", "Pneumonia"]


def test_site_fills_resources_and_prints_node_hours(tmp_path: Path, capsys) -> None:
    source = _demo("classify", tmp_path / "data")
    spec = tmp_path / "s.yaml"
    code, out, err = _init(str(source), "--out", str(spec), "--site", "x86-v100", capsys=capsys)
    assert code == 0, err
    resources = yaml.safe_load(spec.read_text())["resources"]
    assert resources["gpus_per_node"] == 4 and resources["nodes"] == 1
    assert "node-hours if every job ran to its walltime" in out
    assert main(["validate", str(spec), "--site", "x86-v100"]) == 0


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    source = _demo("classify", tmp_path / "data")
    spec = tmp_path / "s.yaml"
    spec.write_text("mine\n")
    code, _, err = _init(str(source), "--out", str(spec), capsys=capsys)
    assert code == 2 and "exists: give --force" in err and spec.read_text() == "mine\n"
    assert _init(str(source), "--out", str(spec), "--force", capsys=capsys)[0] == 0
    assert spec.read_text() != "mine\n"


def test_hostile_sources_get_reasons_never_a_traceback(tmp_path: Path, capsys) -> None:
    """A link out of DATA is not followed, a non-UTF-8 name is shown escaped, an unreadable or
    truncated file is listed with its reason, a huge CSV line names the line."""
    source = _demo("classify", tmp_path / "data")
    outside = tmp_path / "secret.png"
    outside.write_bytes((source / "normal" / "normal-0001.png").read_bytes())
    os.symlink(outside, source / "normal" / "link.png")
    odd = os.fsencode(source / "viral") + b"/caf\xe9.jpg"
    with open(odd, "wb") as fh:
        fh.write((source / "viral" / "viral-0000.jpg").read_bytes())
    (source / "covid19" / "cut.jpg").write_bytes((source / "covid19" / "covid19-0000.jpg").read_bytes()[:300])  # fmt: skip
    locked = source / "bacterial" / "locked.jpg"
    locked.write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    locked.chmod(0)
    code, out, err = _init(str(source), "--out", str(tmp_path / "s.yaml"), capsys=capsys)
    assert code == 0, err
    assert "normal/link.png: link to a file outside data.source" in out
    assert "1 name(s) are not UTF-8 or hold control characters" in out
    assert "covid19/cut.jpg:" in out
    if os.geteuid() != 0:  # root reads any file
        assert "bacterial/locked.jpg: unreadable" in out
    huge = tmp_path / "huge.csv"
    huge.write_text("path,label\n" + "a.png," + "x" * 200_000 + "\n")
    code, _, err = _init(str(huge), "--out", str(tmp_path / "h.yaml"), capsys=capsys)
    assert code == 2 and "huge.csv: not a usable CSV after line 1: field larger" in err, err
    for bad in (tmp_path / "nothing", tmp_path / "s.yaml"):
        code, _, err = _init(str(bad), "--out", str(tmp_path / "x.yaml"), capsys=capsys)
        assert code == 2 and "Traceback" not in err and "error" in err


def test_init_never_imports_torch(tmp_path: Path) -> None:
    """The login side: init on classify and detect data loads no torch (the task's catalog is
    named torch-free in its TaskInfo)."""
    cls, det = _demo("classify", tmp_path / "c"), _demo("detect", tmp_path / "d")
    code = (
        "import sys; from xvhpc.cli import main; "
        f"assert main(['init', {str(cls)!r}, '--out', {str(tmp_path / 'c.yaml')!r}]) == 0; "
        f"assert main(['init', {str(det)!r}, '--out', {str(tmp_path / 'd.yaml')!r}]) == 0; "
        "print('HEAVY', [m for m in ('torch', 'torchvision', 'h5py') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout
