"""Hostile requests to the dashboard (issue 26, item 4), in-process: no token or a wrong one,
no CSRF token, names that try to leave the runs dir (.., absolute, links, shell characters),
values not offered, huge values and bodies. Each gets a clear refusal and changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.ui.conftest import TOKEN


@pytest.fixture(scope="module")
def stranger(roots) -> TestClient:
    from xvhpc.ui.app import Ui, create_app

    return TestClient(create_app(Ui(*roots, TOKEN)))


@pytest.mark.parametrize("path", ["/", "/api/runs", "/runs/first", "/new", "/static/ui.js"])
def test_no_token_no_page(stranger, path) -> None:
    reply = stranger.get(path)
    assert reply.status_code == 403 and "token" in reply.text
    assert "first" not in reply.text


def test_a_wrong_token_sets_no_cookie(stranger) -> None:
    for given in ("wrong", TOKEN[:-1], TOKEN + "x", ""):
        reply = stranger.get(f"/?token={given}", follow_redirects=False)
        assert reply.status_code == 403 and "set-cookie" not in reply.headers
    header = stranger.get("/api/runs", headers={"Authorization": f"token {TOKEN}"})
    assert header.status_code == 200  # a script's way in


def test_actions_need_the_csrf_token(ui_client, roots) -> None:
    runs, _ = roots
    for csrf in (None, "", "0" * 64):
        data = {} if csrf is None else {"csrf": csrf}
        for url in ("/runs/first/cancel", "/runs/first/resubmit"):
            reply = ui_client.post(url, data=data)
            assert reply.status_code == 400 and "CSRF" in reply.text
        new = {"name": "x1", "data": "xrays", "action": "start", **data}
        assert "CSRF" in ui_client.post("/new", data=new).text
    assert not (runs / "x1").exists() and not (runs / "x1.yaml").exists()
    assert "Yes, cancel" in ui_client.get("/runs/first/cancel").text  # the confirmation step


@pytest.mark.parametrize(
    "name",
    ["..", "...", "../first", "%2e%2e", "first;rm -rf ~", "$(id)", "`id`", "a b", "x" * 300, "-rf"],
)
def test_run_names_stay_inside_the_runs_dir(ui_client, name) -> None:
    reply = ui_client.get(f"/runs/{name}")
    if reply.url.path == "/":  # the client itself resolved /runs/.. to the list
        return
    assert reply.status_code in (400, 404)
    assert "Traceback" not in reply.text


def test_a_link_out_of_the_runs_dir_is_not_followed(ui_client, roots, tmp_path) -> None:
    runs, _ = roots
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (runs / "first" / "plan.json").rename(runs / "first" / "plan.keep")
    try:
        (runs / "linked").symlink_to(runs / "first")
        reply = ui_client.get("/runs/linked")
        assert reply.status_code == 400 and "symbolic link" in reply.text
        assert "linked" not in ui_client.get("/").text
    finally:
        (runs / "linked").unlink()
        (runs / "first" / "plan.keep").rename(runs / "first" / "plan.json")


def _form(ui_client, **values: str) -> dict[str, str]:
    base = {"csrf": ui_client.ui.csrf, "name": "third", "data": "xrays", "base": "tiny.yaml",
            "task": "classify", "site": "local", "action": "validate"}  # fmt: skip
    return {**base, **values}


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("data", "../../etc", "not one of the choices"),
        ("data", "/etc", "not one of the choices"),
        ("data", "xrays; rm -rf ~", "not one of the choices"),
        ("base", "../first/spec.yaml", "not one of the choices"),
        ("site", "/tmp/site.yaml", "not one of the choices"),
        ("task", "os.system", "not one of the choices"),
        ("name", "../escape", "not a plain name"),
        ("name", "/tmp/abs", "not a plain name"),
        ("name", "first", "exists"),
        ("max_iterations", "1e999", "not a whole number"),
        ("max_iterations", "9" * 50, "not a whole number"),
        ("learning_rate", "nan", "not a finite number"),
        ("learning_rate", "$(touch /tmp/pwned)", "not a number"),
        ("augment", "covid19=8; rm -rf ~", "expected CLASS=COPIES"),
        ("weight_decay", "1" * 5000, "longer than 200"),
    ],
)
def test_form_values_are_data(ui_client, roots, field, value, said) -> None:
    runs, _ = roots
    before = sorted(os.listdir(runs))
    reply = ui_client.post("/new", data=_form(ui_client, **{field: value}))
    assert reply.status_code == 400 and said in reply.text, reply.text[-400:]
    assert sorted(os.listdir(runs)) == before
    assert not Path("/tmp/pwned").exists()


def test_a_huge_body_is_refused_while_it_streams(ui_client) -> None:
    reply = ui_client.post("/new", data=_form(ui_client, augment="a=1," * 40_000))
    assert reply.status_code == 413


def test_a_file_upload_is_refused(ui_client) -> None:
    reply = ui_client.post("/new", data=_form(ui_client), files={"x": ("a.txt", b"hi")})
    assert reply.status_code == 400 and "Maximum number of files is 0" in reply.text


def test_a_forged_proxy_prefix_is_not_echoed(ui_client) -> None:
    evil = '/x"><script>alert(1)</script>'
    page = ui_client.get("/", headers={"X-Forwarded-Prefix": evil})
    assert page.status_code == 200 and "<script>alert" not in page.text
    assert 'href="/new"' in page.text  # the prefix ignored, not escaped into links


def test_the_unix_socket_is_private_and_never_replaces_a_file(tmp_path) -> None:
    """uvicorn's own ``uds`` makes the socket 0666: ours is 0600 before it listens."""
    import stat

    from xvhpc.ui.main import private_socket

    path = tmp_path / "ui.sock"
    with private_socket(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(SystemExit, match="not a socket"):
        private_socket(keep)
    assert keep.read_text() == "mine"
