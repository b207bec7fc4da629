"""Spec and site validation: file, line, key path, valid choices, several errors at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, xv
from xvhpc.spec import (
    ExperimentSpec,
    SpecError,
    check_against_site,
    load_site,
    load_spec,
    sweep_points,
)
from xvhpc.spec.site import known_sites

JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("spec", JOBS, ids=lambda p: p.name)
def test_shipped_specs_validate(spec: Path) -> None:
    proc = xv("validate", str(spec))
    assert "OK" in proc.stdout


def test_every_site_config_validates() -> None:
    names = set(known_sites())
    assert {"local", "summit", "power9-slurm", "x86-v100", "local-slurm"} <= names
    for name in names:
        site = load_site(name)
        assert site.name == name


def test_typo_and_wrong_type_reported_together_with_lines(tmp_path: Path) -> None:
    text = (ROOT / "jobs" / "covid_xray.yaml").read_text()
    lines = text.splitlines()
    lr_line = next(i for i, ln in enumerate(lines, 1) if "learning_rate:" in ln)
    bs_line = next(i for i, ln in enumerate(lines, 1) if "batch_size:" in ln)
    bad = text.replace("learning_rate:", "learnin_rate:").replace(
        "batch_size: 64", "batch_size: lots"
    )
    spec = tmp_path / "covid.yaml"
    spec.write_text(bad)
    proc = xv("validate", str(spec), check=False)
    assert proc.returncode == 1
    err = proc.stderr
    assert f"{spec}:{lr_line}: train.learnin_rate: unknown key — did you mean learning_rate?" in err
    assert f"{spec}:{bs_line}: train.batch_size:" in err and "'lots'" in err
    assert "2 problems found" in err


def test_invalid_choice_lists_valid_ones_closest_first(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\ndata:\n  source: d\n  resize: leterbox\nmodel:\n  arch: resnet19\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    problems = {p.key: p for p in info.value.problems}
    assert problems["data.resize"].line == 4
    assert problems["data.resize"].choices[0] == "letterbox"
    assert problems["model.arch"].line == 6
    assert problems["model.arch"].choices[0] == "resnet18"
    assert set(problems["model.arch"].choices) >= {"googlenet", "resnet50", "efficientnet_b0"}


def test_missing_required_and_bad_yaml(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert any(p.key == "data" and "missing" in p.message for p in info.value.problems)
    spec.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "not valid YAML" in str(info.value) and f"{spec}:" in str(info.value)


def test_site_limits(tmp_path: Path) -> None:
    text = (
        (ROOT / "jobs" / "covid_xray.yaml")
        .read_text()
        .replace("gpus_per_node: 4", "gpus_per_node: 8")
        .replace('walltime: "02:00:00"', 'walltime: "05:00:00"')
    )
    spec = tmp_path / "c.yaml"
    spec.write_text(text)
    problems = check_against_site(load_spec(spec), load_site("summit"))
    text_all = "\n".join(str(p) for p in problems)
    assert "summit nodes have 6 GPUs" in text_all
    # 2 nodes fall in Summit's 1-45 node bin: 2 h
    assert "05:00:00 exceeds queue 'batch' limit 02:00:00 for 2 node(s)" in text_all
    proc = xv("validate", str(spec), "--site", "summit", check=False)
    assert proc.returncode == 1 and "resources.gpus_per_node" in proc.stderr


def test_summit_requires_project(tmp_path: Path) -> None:
    text = (ROOT / "jobs" / "covid_xray.yaml").read_text().replace("  account: ABC123\n", "")
    spec = tmp_path / "c.yaml"
    spec.write_text(text)
    problems = check_against_site(load_spec(spec), load_site("summit"))
    assert any(p.key == "resources.account" for p in problems)
    assert not check_against_site(load_spec(spec), load_site("x86-v100"))


def test_unknown_site_suggests() -> None:
    proc = xv("validate", str(ROOT / "jobs" / "smoke.yaml"), "--site", "sumit", check=False)
    assert proc.returncode == 1 and "did you mean summit?" in proc.stderr


def test_bad_site_config_has_same_error_quality(tmp_path: Path) -> None:
    site = tmp_path / "mysite.yaml"
    site.write_text(
        "name: mysite\narchitecture: x86_64\nscheduler: slurmm\nlauncher: srun\nnode: {cores: 4, memory_gb: 8, gpu: 2}\n"
    )
    with pytest.raises(SpecError) as info:
        load_site(str(site))
    text = str(info.value)
    assert f"{site}:3: scheduler: 'slurmm' is not a valid choice — did you mean slurm?" in text
    assert f"{site}:5: node.gpu: unknown key — did you mean gpus?" in text


def test_sweep_keys_and_values_checked(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {source: d}\nsweep:\n  parameters:\n    train.learnig_rate: [0.1]\n    train.batch_size: [8, -1]\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = str(info.value)
    assert (
        ":5: sweep.parameters.train.learnig_rate: not a spec key — did you mean train.learning_rate?"
        in text
    )
    assert ":6: sweep.parameters.train.batch_size: value -1:" in text


def test_sweep_expansion_grid_and_random() -> None:
    loaded = load_spec(ROOT / "jobs" / "covid_sweep.yaml")
    points = sweep_points(loaded)
    assert len(points) == 4
    assert {tuple(sorted(p.items())) for p in points} == {
        (("train.learning_rate", lr), ("train.weight_decay", wd))
        for lr in (0.01, 0.001)
        for wd in (0.0001, 0.0005)
    }
    loaded.spec.sweep.method = "random"
    loaded.spec.sweep.samples = 3
    first, second = sweep_points(loaded), sweep_points(loaded)
    assert first == second and len(first) == 3


def test_spec_operating_point_needs_one_target() -> None:
    base = {"name": "x", "data": {"source": "d"}}
    ok = ExperimentSpec.model_validate(
        {**base, "evaluate": {"operating_point": {"positive": "covid19", "min_sensitivity": 0.95}}}
    )
    assert ok.evaluate.operating_point.min_sensitivity == 0.95
    for bad in (
        {"positive": "covid19"},
        {"positive": "c", "min_sensitivity": 0.9, "min_specificity": 0.9},
    ):
        with pytest.raises(ValueError, match="min_sensitivity or min_specificity"):
            ExperimentSpec.model_validate({**base, "evaluate": {"operating_point": bad}})
    with pytest.raises(ValueError):
        ExperimentSpec.model_validate({**base, "evaluate": {"bootstrap": 100}})  # < 1,000
