"""Hostile run directories and hostile pages against the dashboard (second pass, issue 26):
a shared runs dir where someone else can write (damaged records, FIFOs, links, a jobs.json
naming options instead of job ids), base specs that are not plain YAML, a hand-written spec
the form must not replace, and the Unix-socket mode reached through a tunnelled TCP port
(other sites must neither compute its CSRF token nor reach it by DNS rebinding)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.ui.conftest import TOKEN


@pytest.fixture
def second(roots):
    """A copy of the compiled run ``first`` to damage; removed afterwards."""
    runs, _ = roots
    shutil.copytree(runs / "first", runs / "second")
    yield runs / "second"
    shutil.rmtree(runs / "second", ignore_errors=True)


def _get_within(client: TestClient, url: str, seconds: float = 10.0):
    """The reply, or a failure when the request does not come back in time (a FIFO read)."""
    got: dict = {}
    worker = threading.Thread(target=lambda: got.setdefault("r", client.get(url)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"GET {url} hung"
    return got["r"]


@pytest.mark.parametrize("damage", ["not json", "fifo", "link", "huge-list"])
def test_a_damaged_run_never_stops_the_list(ui_client, second, tmp_path, damage) -> None:
    from xvhpc.rundir import JOBS, Layout

    secret = tmp_path / "secret.json"
    secret.write_text('{"iteration": 31337, "max_iterations": 40}')
    jobs = second / JOBS
    if damage == "not json":
        Layout(second).plan.write_text("{not json")
    elif damage == "fifo":
        os.mkfifo(jobs)  # a reader without O_NONBLOCK blocks here for ever
    elif damage == "link":
        Layout(second).progress(0).unlink()
        Layout(second).progress(0).symlink_to(secret)
    else:
        Layout(second).leaderboard.parent.mkdir(parents=True, exist_ok=True)
        Layout(second).leaderboard.write_text('{"rows": "abc", "failed": [1]}')
    for url in ("/", "/api/runs", "/runs/second", "/api/runs/second"):
        reply = _get_within(ui_client, url)
        assert reply.status_code == 200, (url, reply.text[-300:])
        assert "31337" not in reply.text  # the linked record is not read
    listed = {r["name"]: r for r in ui_client.get("/api/runs").json()["runs"]}
    assert listed["first"]["state"] != "DAMAGED"
    if damage == "not json":
        assert listed["second"]["state"] == "DAMAGED" and "damaged" in listed["second"]["error"]
    if damage == "fifo":
        assert "not a regular file" in listed["second"]["error"]
    if damage == "link":
        assert "symbolic link" in listed["second"]["points"][0]["text"]


def test_cancel_names_only_job_ids(ui_client, second) -> None:
    """jobs.json of a shared run dir is data: ``--help`` (or ``--user=me``) is no job id and
    never reaches scancel's argv."""
    from xvhpc.rundir import JOBS

    steps = {"train": {"job_id": "--help"}, "ingest": {"job_id": "12"}}
    (second / JOBS).write_text(json.dumps({"scheduler": "slurm", "site": "x", "steps": steps}))
    reply = ui_client.post("/runs/second/cancel", data={"csrf": ui_client.ui.csrf})
    assert reply.status_code == 400 and "not a job id" in reply.text
    assert "cancelled" not in reply.text


def _form(client: TestClient, **values: str) -> dict[str, str]:
    base = {
        "csrf": client.ui.csrf,
        "name": "fresh",
        "data": "xrays",
        "base": "tiny.yaml",
        "task": "classify",
        "site": "local",
        "action": "validate",
    }
    return {**base, **values}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b"!!python/object/apply:os.system ['touch /tmp/xvhpc-ui-pwned']\n", "is not allowed"),
        (
            b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
            + b"".join(
                b"%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n" % ((c,) * 2 + (c - 1,) * 9)
                for c in range(ord("b"), ord("k"))
            ),
            "expands to more than",
        ),
        (b"train: [\n", "not valid YAML"),
        (b"train:\n  max_iterations: \xff\n", "not UTF-8"),
    ],
    ids=["python-tag", "alias-bomb", "broken", "not-utf8"],
)
def test_a_base_spec_is_read_as_validate_reads_it(ui_client, roots, text, said) -> None:
    runs, data = roots
    (data / "hostile.yaml").write_bytes(text)
    try:
        reply = ui_client.post("/new", data=_form(ui_client, base="hostile.yaml"))
    finally:
        (data / "hostile.yaml").unlink()
    assert reply.status_code == 400 and said in reply.text, reply.text[-400:]
    assert "hostile.yaml" in reply.text  # the file (and line) named
    assert not Path("/tmp/xvhpc-ui-pwned").exists() and not (runs / "fresh.yaml").exists()


def test_a_hand_written_spec_is_never_replaced(ui_client, roots) -> None:
    runs, _ = roots
    mine = runs / "mine.yaml"
    mine.write_text("# my own spec, written by hand\nname: mine\n")
    try:
        reply = ui_client.post("/new", data=_form(ui_client, name="mine"))
        assert reply.status_code == 400 and "did not write" in reply.text
        assert mine.read_text().startswith("# my own spec")
        for _ in range(2):  # the form's own spec is its to rewrite, check after check
            assert ui_client.post("/new", data=_form(ui_client, name="again")).status_code == 200
    finally:
        mine.unlink()
        (runs / "again.yaml").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def socket_ui(roots):
    """The app as ``xvhpc ui --socket`` serves it: no token."""
    from xvhpc.ui.app import Ui, create_app

    ui = Ui(*roots, None)
    return ui, create_app(ui)


def test_the_socket_mode_csrf_token_is_secret(socket_ui, roots) -> None:
    """It was an HMAC of the runs path and the uid, which any other user (and any page they
    make) can compute: a form posted from elsewhere to the tunnelled port was accepted."""
    from xvhpc.ui.app import Ui
    from xvhpc.ui.security import csrf_token

    ui, app = socket_ui
    runs, data = roots
    guessed = csrf_token(str(runs.resolve()) + str(os.getuid()))
    assert ui.csrf not in (guessed, Ui(runs, data, None).csrf)
    client = TestClient(app, base_url="http://localhost:8080")
    reply = client.post("/runs/first/cancel", data={"csrf": guessed})
    assert reply.status_code == 400 and "CSRF" in reply.text


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:8080", 200),
        ("127.0.0.1:8080", 200),
        ("[::1]:8080", 200),
        ("localhost", 200),
        ("evil.example:8080", 403),
        ("localhost.evil.example", 403),
        ("", 403),
    ],
)
def test_the_socket_mode_answers_only_this_machines_name(socket_ui, host, status) -> None:
    """DNS rebinding: a page at evil.example whose name now points at 127.0.0.1 reaches the
    tunnelled port, but its requests carry Host: evil.example."""
    _, app = socket_ui
    reply = TestClient(app).get("/api/runs", headers={"host": host})
    assert reply.status_code == status
    assert ("first" in reply.text) == (status == 200)


def test_the_token_mode_still_answers_any_host(roots) -> None:
    """With a token (OnDemand proxies under its own name), Host is not what protects it."""
    from xvhpc.ui.app import Ui, create_app

    client = TestClient(create_app(Ui(*roots, TOKEN)))
    reply = client.get(
        "/api/runs", headers={"host": "node12:40123", "Authorization": f"token {TOKEN}"}
    )
    assert reply.status_code == 200
