"""The Open OnDemand batch-connect app (ood/xvhpc-ui/): its ERB parts rendered by a tiny
substitution (Shellwords.escape → shlex.quote: one argument either way), the rendered script
against its golden file and shellcheck, and then run for real as OnDemand would (host, port,
password, root_path from before.sh): the dashboard answers under /node/<host>/<port>/ with
the session's token, and a form value full of shell characters stays one argument.

Regenerate the golden file after an intended change:
    XVHPC_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/unit/ui/test_ood.py -k golden"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.conftest import ROOT, require

APP = ROOT / "ood" / "xvhpc-ui"
GOLDEN = ROOT / "tests" / "golden" / "ood" / "script.sh"
FORM = {"xvhpc_module": "", "runs_dir": "/home/rao/runs", "data_root": ""}


def render(template: Path, context: dict[str, str]) -> str:
    """The ERB of our templates, rendered: the require line dropped, each
    ``<%= Shellwords.escape(context.X) %>`` replaced by X shell-quoted."""
    text = template.read_text().replace('<%- require "shellwords" -%>\n', "")
    text = re.sub(
        r"<%= Shellwords\.escape\(context\.(\w+)\) %>",
        lambda m: shlex.quote(context[m.group(1)]),
        text,
    )
    assert "<%" not in text, "an ERB part the test does not know how to render"
    return text


def test_the_app_is_laid_out_as_batch_connect_wants() -> None:
    for name in ("manifest.yml", "form.yml", "submit.yml.erb", "view.html.erb",
                 "template/before.sh.erb", "template/script.sh.erb"):  # fmt: skip
        assert (APP / name).is_file(), name
    assert yaml.safe_load((APP / "manifest.yml").read_text())["role"] == "batch_connect"
    form = yaml.safe_load((APP / "form.yml").read_text())
    assert set(FORM) <= set(form["attributes"]) and set(FORM) <= set(form["form"])
    assert yaml.safe_load((APP / "submit.yml.erb").read_text())["batch_connect"] == {
        "template": "basic"
    }
    view = (APP / "view.html.erb").read_text()
    assert "/node/<%= host %>/<%= port %>/?token=" in view


def test_the_rendered_script_matches_its_golden_file_and_shellcheck(tmp_path) -> None:
    script = render(APP / "template" / "script.sh.erb", FORM)
    assert script.startswith("#!/usr/bin/env bash\n")
    if os.environ.get("XVHPC_REGEN_GOLDEN"):
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text()
    require("shellcheck", "the OnDemand app's scripts")
    (tmp_path / "script.sh").write_text(script)
    (tmp_path / "before.sh").write_text((APP / "template" / "before.sh.erb").read_text())
    for name in ("script.sh", "before.sh"):
        done = subprocess.run(["shellcheck", "-s", "bash", str(tmp_path / name)],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_script_serves_under_the_proxy_path_and_quotes_form_values(tmp_path) -> None:
    hostile = "runs $(touch pwned); `touch pwned2` 'x"
    script = tmp_path / "script.sh"
    script.write_text(render(APP / "template" / "script.sh.erb", {**FORM, "runs_dir": hostile}))
    port = _free_port()
    prefix = f"/node/127.0.0.1/{port}"
    env = {**os.environ, "host": "127.0.0.1", "port": str(port), "password": "sessiontoken",
           "root_path": prefix, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        page = None
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    page = client.get(f"{prefix}/?token=sessiontoken", follow_redirects=True)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert page is not None, proc.communicate(timeout=5)[0]
            assert page.status_code == 200 and f'href="{prefix}/new"' in page.text
            assert client.get(f"{prefix}/api/runs").status_code == 200  # the cookie holds
            assert httpx.get(f"http://127.0.0.1:{port}{prefix}/").status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert (tmp_path / hostile).is_dir()  # the value is one folder name, nothing ran
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_form_values_starting_with_a_dash_stay_folders(tmp_path) -> None:
    """A runs folder typed as ``--host=0.0.0.0`` was an option of ``xvhpc ui`` (the dashboard
    then listened on every interface); now each value reaches it as the folder it names."""
    stub = tmp_path / "bin" / "xvhpc"
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    stub.chmod(0o755)
    form = {**FORM, "runs_dir": "--host=0.0.0.0", "data_root": "-x y"}
    script = tmp_path / "script.sh"
    script.write_text(render(APP / "template" / "script.sh.erb", form))
    env = {**os.environ, "host": "cn12", "port": "40123", "root_path": "/node/cn12/40123",
           "password": "t", "ARGV_OUT": str(tmp_path / "argv"),
           "PATH": f"{stub.parent}:{os.environ['PATH']}"}  # fmt: skip
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=True, timeout=30)
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[0] == "ui" and argv[argv.index("--host") + 1] == "cn12"
    assert "--data-root=-x y" in argv and argv[-2:] == ["--", "--host=0.0.0.0"]
    assert (tmp_path / "--host=0.0.0.0").is_dir()  # mkdir -- made the folder itself
