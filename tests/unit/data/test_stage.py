"""Node-local staging: shards copied once per node, verified, and read there; else the shared copy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_spec, xv
from xvhpc.data.stage import READY, STAGE_ENV, shard_dir, stage_shards
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.spec import check_against_site, load_site, load_spec


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, demo_data: Path) -> Path:
    work = tmp_path_factory.mktemp("stage")
    spec = tiny_spec(work / "spec.yaml", demo_data)
    xv("compile", str(spec), "--site", "local", "--out", str(work / "run"), cwd=work)
    xv("ingest", "--run-dir", str(work / "run"), "--shard", "all", "--merge")
    return work / "run"


def test_staged_copy_is_verified_and_read(ingested: Path, tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "node-a"
    assert stage_shards(ingested, dest) == 2
    assert stage_shards(ingested, dest) == 0, "verified copies are not copied again"
    monkeypatch.setenv(STAGE_ENV, str(tmp_path / "node-$NODE"))
    monkeypatch.setenv("NODE", "a")
    assert shard_dir(ingested) == dest


def test_missing_or_partial_copy_falls_back_to_shared(
    ingested: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setenv(STAGE_ENV, str(tmp_path / "nowhere"))
    with caplog.at_level(logging.WARNING):
        assert shard_dir(ingested) == ingested / "shards"
    assert "no complete node-local copy" in caplog.text
    dest = tmp_path / "partial"
    stage_shards(ingested, dest)
    marker = json.loads((dest / READY).read_text())
    marker["files"].popitem()  # a copy of an older manifest: not what this run needs
    (dest / READY).write_text(json.dumps(marker))
    monkeypatch.setenv(STAGE_ENV, str(dest))
    assert shard_dir(ingested) == ingested / "shards"


def test_corrupt_copy_is_recopied(ingested: Path, tmp_path: Path) -> None:
    dest = tmp_path / "node"
    stage_shards(ingested, dest)
    shard = sorted(dest.glob("*.h5"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert stage_shards(ingested, dest) == 1


def _staged_spec(tmp_path: Path, **resources) -> Path:
    data = yaml.safe_load((ROOT / "jobs" / "covid_xray.yaml").read_text())
    data["data"].update(source=str(tmp_path), stage="node_local")
    data["resources"].update(resources)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_summit_staging_asks_for_nvme_and_copies_once_per_node(tmp_path: Path) -> None:
    loaded, site = load_spec(_staged_spec(tmp_path)), load_site("summit")
    assert not check_against_site(loaded, site)
    files = render_plan(build_plan(loaded, site, "/scratch/r"), site)
    train = files["scripts/train.lsf"]
    assert '#BSUB -alloc_flags "smt4 NVME"' in train
    assert "export XVHPC_STAGE_DIR='/mnt/bb/$USER/xvhpc-" in train
    assert "jsrun -n2 -r1 -a1 -c1 -g0 --smpiargs=-disable_gpu_hooks " in train
    assert train.index(" stage ") < train.index(" train ")
    assert "NVME" not in files["scripts/evaluate.lsf"]


def test_a_site_without_node_local_storage_is_a_clear_error(tmp_path: Path) -> None:
    problems = check_against_site(load_spec(_staged_spec(tmp_path)), load_site("x86-v100"))
    assert [p.key for p in problems] == ["data.stage"]
    assert "node_local.path" in problems[0].message
