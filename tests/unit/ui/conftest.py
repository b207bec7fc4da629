"""A dashboard over a real compiled run directory (``xvhpc compile`` in-process: torch-free,
no training), with progress and metrics written through the rundir API as training does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_spec

TOKEN = "test-token-0123456789"


def write_progress(run: Path, iteration: int, total: int = 40, eta_s: float = 30.0) -> None:
    """What rank 0 writes at a log window: a metrics line and the progress record."""
    from xvhpc.rundir import Layout
    from xvhpc.rundir.records import Progress
    from xvhpc.util import open_append, write_json_atomic

    layout = Layout(run)
    layout.train_dir(0).mkdir(parents=True, exist_ok=True)
    loss = 2.0 / (1 + iteration / 10)
    with open_append(layout.metrics_log(0)) as fh:
        fh.write(f'{{"iteration": {iteration}, "loss": {loss}}}\n')
        if iteration % 10 == 0:
            fh.write(
                f'{{"iteration": {iteration}, "val_loss": {loss * 1.1}, "val_accuracy": 0.5}}\n'
            )
    record = Progress(iteration=iteration, loss=loss, max_iterations=total, eta_s=eta_s,
                      state="running", world_size=1)  # fmt: skip
    write_json_atomic(layout.progress(0), record.to_json())


def make_roots(top: Path) -> tuple[Path, Path]:
    """(runs dir with one compiled run ``first``, data root with a class-folder dataset and a
    base spec): real files, made in a second."""
    from xvhpc.cli import main
    from xvhpc.data.synth import make_dataset

    data, runs = top / "data", top / "runs"
    runs.mkdir()
    make_dataset(data / "xrays", per_class=6, size=32, seed=1)
    spec = tiny_spec(data / "tiny.yaml", data / "xrays", train={"max_iterations": 4,
                     "checkpoint_every": 2, "val_every": 2})  # fmt: skip
    assert main(["compile", str(spec), "--out", str(runs / "first")]) == 0
    write_progress(runs / "first", 10)
    return runs, data


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path]:
    return make_roots(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def ui_client(roots):
    from fastapi.testclient import TestClient

    from xvhpc.ui.app import Ui, create_app

    runs, data = roots
    ui = Ui(runs, data, TOKEN)
    client = TestClient(create_app(ui))
    client.ui = ui  # type: ignore[attr-defined]
    assert client.get(f"/?token={TOKEN}").status_code == 200  # the cookie from here on
    return client
