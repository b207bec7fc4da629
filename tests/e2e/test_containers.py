"""Steps in a container image (env.container), run for real under Charliecloud (Debian's
charliecloud: unprivileged, no daemon) on an image this test builds offline: a directory tree whose system folders are the host's, bound read-only."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require, tiny_spec, xv

pytestmark = pytest.mark.e2e


def image_tree(root: Path, binds: list[Path]) -> Path:
    """A Charliecloud directory image: empty system folders, bound from the host at run time,
    and a mount point for every folder the run needs (ch-run binds onto existing paths)."""
    for name in ("usr", "lib", "lib64", "bin", "etc", "tmp", "proc", "dev", "sys", "home", "root"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in ("passwd", "group", "hosts", "resolv.conf"):
        (root / "etc" / name).touch()
    for path in binds:
        (root / path.relative_to("/")).mkdir(parents=True, exist_ok=True)
    return root


def test_the_pipeline_runs_inside_a_real_charliecloud_container(
    tmp_path: Path, demo_data: Path
) -> None:
    """`xvhpc run` on a site whose steps run under ch-run: ingest, train (torchrun inside one
    container), evaluate and report all run in the image; each rank records it ran there."""
    require("ch-run", "a real container runtime for env.container (apt: charliecloud)")
    venv = Path(sys.prefix)
    binds = sorted(
        {Path(p) for p in ("/usr", "/lib", "/lib64", "/bin")} | {venv, Path(sys.base_prefix), ROOT}
    )
    work = tmp_path / "work"
    (work / "run").mkdir(parents=True)
    image = image_tree(tmp_path / "image", [*binds, work, demo_data])
    (image / "xvhpc-image").write_text("inside\n")  # only the image has it
    site = {
        "name": "local-charliecloud",
        "architecture": "x86_64",
        "scheduler": "local",
        "launcher": "torchrun",
        "node": {"cores": 2, "gpus": 0, "memory_gb": 8},
        "env": {
            "python": str(venv / "bin" / "python"),
            "container": {
                "runtime": "charliecloud",
                "image": str(image),
                "binds": [str(b) for b in binds if b.is_dir()] + [str(work)],
            },
        },
    }
    site_file = tmp_path / "local-charliecloud.yaml"
    site_file.write_text(yaml.safe_dump(site))
    spec = tiny_spec(work / "spec.yaml", demo_data, train={"max_iterations": 4})
    env = {"USER": os.environ.get("USER", "root")}  # ch-run needs it (a login shell sets it)
    run = work / "run"
    xv("run", str(spec), "--site", str(site_file), "--out", str(run), env=env, cwd=work)
    script = (run / "scripts" / "train.sh").read_text()
    assert f'ch-run -b "$RUN_DIR" -b {demo_data}' in script and str(image) in script
    assert (run / "report.html").exists() and (run / "model" / "meta.json").exists()
    probe = xv("run", str(spec), "--site", str(site_file), "--out", str(run), env=env, cwd=work)
    assert probe.stdout.count("already completed, skipping") == 4
    inside = xv_in_image(image, binds, work, env)  # the same ch-run: its root is the image's
    assert inside["image_marker"] and not Path("/xvhpc-image").exists()


def xv_in_image(image: Path, binds: list[Path], work: Path, env: dict[str, str]) -> dict:
    """What a process under the same ch-run sees: the image's file, not the host's view."""
    import subprocess

    code = (
        "import json, os; print(json.dumps({'image_marker': os.path.exists('/xvhpc-image'), "
        f"'host_marker': os.path.exists({str(image)!r})}}))"
    )
    argv = ["ch-run", *[t for b in [*binds, work] for t in ("-b", str(b))], str(image), "--"]
    proc = subprocess.run(
        [*argv, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
