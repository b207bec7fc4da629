"""The dashboard in-process (TestClient): what each page shows of a real compiled run, the
scheduler asked at most once per period, the new-run form's validation with file:line errors,
and paths under a proxy prefix. The hostile cases: test_hostile_ui.py; a real browser:
tests/e2e/test_ui_browser.py."""

from __future__ import annotations

import re

from tests.unit.ui.conftest import TOKEN, write_progress


def test_the_list_shows_the_run_with_its_state_and_progress(ui_client) -> None:
    page = ui_client.get("/")
    assert page.status_code == 200
    assert 'data-run="first"' in page.text and "COMPILED" in page.text
    assert "iteration 10/40" in page.text
    runs = ui_client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["first"]
    assert runs[0]["points"][0]["fraction"] == 0.25
    assert [s["name"] for s in runs[0]["steps"]] == ["ingest", "train", "evaluate", "report"]


def test_the_run_page_shows_progress_time_left_and_curves(ui_client, roots) -> None:
    runs, _ = roots
    write_progress(runs / "first", 20, eta_s=75)
    page = ui_client.get("/runs/first")
    assert page.status_code == 200
    assert "00:01:15 left" in page.text
    assert page.text.count("<svg") == 2  # loss, and the validation figures
    assert 'data-name="val_accuracy"' in page.text and 'data-name="loss"' in page.text
    detail = ui_client.get("/api/runs/first").json()
    assert detail["points"][0]["iteration"] == 20 and detail["points"][0]["time_left"]
    assert "<polyline" in detail["charts"]["0"]
    assert ui_client.get("/runs/first/report").status_code == 400  # none written yet


def test_the_scheduler_is_asked_once_per_period_however_many_views(roots) -> None:
    """A run on Slurm: five page views in one period make one status query."""
    import json

    from xvhpc.rundir import Layout
    from xvhpc.ui.runs import StatusCache, summary

    runs, _ = roots
    run = runs / "queued"
    Layout(run).plan.parent.mkdir()
    Layout(run).plan.write_text((Layout(runs / "first").plan).read_text())
    jobs = {"scheduler": "slurm", "site": "x86-v100", "steps": {"train": {"job_id": "999999"}}}
    Layout(run).jobs.write_text(json.dumps(jobs))
    cache = StatusCache(every=60)
    for _ in range(5):
        summary(run, cache, live_here=False)
    assert cache.queries == 1
    cache.every = 0
    summary(run, cache, live_here=False)
    assert cache.queries == 2


def test_a_new_run_is_validated_with_file_and_line(ui_client, roots) -> None:
    runs, _ = roots
    form = {"csrf": ui_client.ui.csrf, "name": "second", "data": "xrays", "base": "tiny.yaml",
            "task": "classify", "site": "local", "learning_rate": "50", "augment": "a=2",
            "action": "validate"}  # fmt: skip
    page = ui_client.post("/new", data=form)
    assert page.status_code == 422
    problems = re.search(r'<pre id="problems"[^>]*>(.*?)</pre>', page.text, re.S)
    assert problems and f"{runs / 'second.yaml'}:" in problems.group(1)
    assert "train.learning_rate" in problems.group(1)
    assert not (runs / "second").exists()  # nothing started
    page = ui_client.post("/new", data={**form, "learning_rate": "0.01"})
    assert page.status_code == 200 and 'id="valid"' in page.text


def test_a_site_limit_is_checked_as_validate_site_does(ui_client, roots) -> None:
    import yaml

    _, data = roots
    base = yaml.safe_load((data / "tiny.yaml").read_text())
    base["resources"] = {"nodes": 1, "gpus_per_node": 8, "walltime": "00:20:00"}
    (data / "eight.yaml").write_text(yaml.safe_dump(base))
    form = {"csrf": ui_client.ui.csrf, "name": "big", "data": "xrays", "base": "eight.yaml",
            "task": "classify", "site": "summit", "action": "validate"}  # fmt: skip
    page = ui_client.post("/new", data=form)
    assert page.status_code == 422 and "resources.gpus_per_node" in page.text
    assert "summit nodes have 6 GPUs" in page.text


def test_links_carry_a_proxy_prefix(roots) -> None:
    from fastapi.testclient import TestClient

    from xvhpc.ui.app import Ui, create_app

    runs, data = roots
    prefix = "/node/cn12/8123"
    client = TestClient(create_app(Ui(runs, data, TOKEN, prefix)), root_path=prefix)
    first = client.get(f"{prefix}/?token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == f"{prefix}/"
    assert f"Path={prefix}" in first.headers["set-cookie"]
    page = client.get(f"{prefix}/runs/first")
    assert page.status_code == 200
    links = re.findall(r'(?:href|src|action|data-poll)="([^"]*)"', page.text)
    assert links and all(link.startswith(prefix + "/") for link in links), links
