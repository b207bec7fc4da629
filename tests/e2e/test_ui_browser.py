"""The dashboard and the try-it page in a real browser (headless Chromium driven by Selenium
through /usr/bin/chromedriver), against real servers (uvicorn in a thread, real sockets):
the progress bar moves as progress records are written, the new-run form validates and starts
a real tiny local run that the list then shows completed, and the try-it page of that run's
model draws the heatmap of an uploaded X-ray, and the page draws a detector's boxes (under the
threshold slider) and a segmenter's mask. Screenshots go to $XVHPC_SCREENSHOTS (the
README's: ``scripts/screenshots.sh`` sets docs/img) or to the test's tmp folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.unit.ui.conftest import TOKEN, make_roots, write_progress

pytestmark = pytest.mark.e2e
RUN_TIMEOUT = 300  # s: a tiny local run (ingest, 4 iterations, evaluate, report) on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_on():
    """Start an ASGI app with uvicorn in a thread on a free port; stop them all at the end."""
    import uvicorn

    servers = []

    def start(app) -> str:
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        threading.Thread(target=server.run, daemon=True).start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        servers.append(server)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.should_exit = True


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require("chromium", "the dashboard's browser tests")
    require("chromedriver", "the dashboard's browser tests (Debian's chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--disable-gpu"):  # fmt: skip
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, serve_on) -> tuple[str, Path, Path]:
    from xvhpc.ui.app import Ui, create_app

    runs, data = make_roots(tmp_path_factory.mktemp("ui-browser"))
    return serve_on(create_app(Ui(runs, data, TOKEN))), runs, data


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = Path(os.environ.get("XVHPC_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait(driver, check, timeout: float = 20, what: str = "") -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: check(d), what)


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_the_progress_bar_moves_as_training_writes(browser, dashboard) -> None:
    from selenium.webdriver.common.by import By

    url, runs, _ = dashboard
    browser.get(f"{url}/?token={TOKEN}")  # the token once; the cookie from here on
    assert "first" in _text(browser, "#runs")
    browser.get(f"{url}/runs/first")
    bar = browser.find_element(By.CSS_SELECTOR, ".point progress")
    assert float(bar.get_attribute("value")) == 0.25
    write_progress(runs / "first", 30, eta_s=42)  # a real file change; the page polls
    _wait(browser, lambda d: "iteration 30/40" in _text(d, ".progress-text"), what="progress")
    assert (
        float(browser.find_element(By.CSS_SELECTOR, ".point progress").get_attribute("value"))
        == 0.75
    )
    assert "00:00:42 left" in _text(browser, ".time-left")
    assert browser.find_elements(By.CSS_SELECTOR, ".charts svg polyline")


def test_a_run_started_from_the_form_runs(browser, dashboard, shots) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, runs, _ = dashboard
    browser.get(f"{url}/new")
    browser.find_element(By.ID, "name").send_keys("tiny")
    Select(browser.find_element(By.ID, "data")).select_by_visible_text("xrays")
    Select(browser.find_element(By.ID, "base")).select_by_visible_text("tiny.yaml")
    browser.find_element(By.ID, "learning_rate").send_keys("50")
    browser.find_element(By.ID, "augment").send_keys("covid19=1")
    browser.find_element(By.ID, "validate").click()
    problems = _text(browser, "#problems")
    assert f"{runs / 'tiny.yaml'}:" in problems and "train.learning_rate" in problems
    field = browser.find_element(By.ID, "learning_rate")
    field.clear()
    field.send_keys("0.01")
    browser.find_element(By.ID, "start").click()
    _wait(browser, lambda d: d.current_url.endswith("/runs/tiny"), what="the run page")
    _wait(browser, lambda d: _text(d, "#run-state") == "COMPLETED", RUN_TIMEOUT, "the run")
    assert (runs / "tiny" / "report.html").is_file()
    browser.get(f"{url}/runs/tiny")  # the finished page, with its report link and curves
    browser.save_screenshot(str(shots / "ui-run.png"))
    browser.get(f"{url}/")
    assert "COMPLETED" in _text(browser, 'tr[data-run="tiny"]')
    browser.save_screenshot(str(shots / "ui-dashboard.png"))


def test_the_tryit_page_draws_the_heatmap(browser, dashboard, serve_on, shots) -> None:
    from selenium.webdriver.common.by import By

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    _, runs, data = dashboard
    if not (runs / "tiny" / "model").is_dir():
        pytest.fail("needs the run the form test trains (run the module whole)")
    url = serve_on(create_app(load_bundle(runs / "tiny" / "model")))
    xray = next((data / "xrays" / "covid19").glob("*.png"))
    browser.get(f"{url}/")
    browser.find_element(By.ID, "file").send_keys(str(xray))
    browser.find_element(By.ID, "send").click()
    _wait(
        browser,
        lambda d: d.find_element(By.ID, "heatmap").get_attribute("naturalWidth") not in (None, "0"),
        what="heatmap",
    )
    assert (
        browser.find_element(By.ID, "heatmap")
        .get_attribute("src")
        .startswith("data:image/png;base64,")
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr")
    assert len(rows) == 4  # threshold 0 asked: every class, ranked
    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = '0.99';"
        "s.dispatchEvent(new Event('input'));"
    )
    below = browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr.below")
    assert len(below) >= 3 and _text(browser, "#threshold-value") == "0.99"
    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = '0.2';"
        "s.dispatchEvent(new Event('input'));"
    )
    browser.save_screenshot(str(shots / "tryit.png"))


def _bundle(out: Path, task: str, arch: str, classes: list[str]) -> Path:
    """A real bundle of ``task``'s model, untrained but with its output biases set so that it
    answers something to draw (training one costs a minute; the page only draws answers):
    the detector scores every location high (boxes), the segmenter says class 1 everywhere."""
    import torch

    from xvhpc.data.manifest import preprocessing
    from xvhpc.models.bundle import save_bundle
    from xvhpc.registry import load_task
    from xvhpc.spec.schema import ExperimentSpec

    spec = ExperimentSpec.model_validate(
        {"name": f"tryit-{task}", "task": task, "model": {"arch": arch, "pretrained": "none"},
         "data": {"source": "x", "image_size": 64, "channels": 3, "resize": "letterbox"}}
    )  # fmt: skip
    torch.manual_seed(0)
    model = load_task(task).build_model(spec.model, len(classes), 64)
    weights = dict(model.named_parameters())
    with torch.no_grad():
        if task == "detect":
            weights["head.classification_head.cls_logits.bias"].fill_(6.0)
            weights["head.regression_head.bbox_ctrness.bias"].fill_(6.0)
        else:
            weights["head.bias"].copy_(torch.tensor([0.0, 8.0]))
    save_bundle(out, model, spec, classes, preprocessing(spec.data), 0, {})
    return out


def _upload(browser, url: str, image: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/")
    browser.find_element(By.ID, "file").send_keys(str(image))
    browser.find_element(By.ID, "send").click()
    _wait(browser, lambda d: "prediction(s)" in _text(d, "#message"), what="the answer")


def _slide(browser, value: str) -> None:
    browser.execute_script(
        f"const s = document.getElementById('threshold'); s.value = '{value}';"
        "s.dispatchEvent(new Event('input'));"
    )


def test_the_tryit_page_draws_boxes_and_masks(browser, serve_on, tmp_path, shots) -> None:
    """Detection: the boxes /v1/predict answers are drawn on the canvas and the threshold
    slider hides them; segmentation: the label-map mask is laid over the image."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    detector = _bundle(tmp_path / "det", "detect", "fcos_tiny", ["red_box", "green_box"])
    _upload(browser, serve_on(create_app(load_bundle(detector))), image)
    canvas = browser.find_element(By.ID, "canvas")
    drawn = int(canvas.get_attribute("data-boxes"))
    assert drawn > 0 and "box(es) at or above" in _text(browser, "#overlay-caption")
    browser.save_screenshot(str(shots / "tryit-boxes.png"))
    _slide(browser, "1")  # every confidence is below 1: no box stays
    assert browser.find_element(By.ID, "canvas").get_attribute("data-boxes") == "0"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr.below")) == drawn

    segmenter = _bundle(tmp_path / "seg", "segment", "unet_tiny", ["background", "lesion"])
    _upload(browser, serve_on(create_app(load_bundle(segmenter))), image)
    assert "mask" in _text(browser, "#overlay-caption")
    pixel = browser.execute_script(
        "const c = document.getElementById('canvas');"
        "return [c.width, c.height, ...c.getContext('2d').getImageData(32, 24, 1, 1).data];"
    )
    assert pixel[:2] == [64, 48]  # the canvas is the uploaded image's size
    red, green = pixel[2], pixel[3]
    assert green > 60 and red < 190, pixel  # lesion's colour (#3cb44b) over the red image
    browser.save_screenshot(str(shots / "tryit-mask.png"))


def test_cancel_from_the_dashboard_cancels_the_slurm_jobs(
    slurm_up, browser, serve_on, tmp_path, capsys
) -> None:
    """A run started from the form on site local-slurm (``xvhpc submit``: real sbatch), then
    Cancel and its confirmation: scancel for every job, and ``xvhpc status`` says CANCELLED."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from xvhpc.cli import main
    from xvhpc.rundir import JOBS
    from xvhpc.ui.app import Ui, create_app

    runs, data = make_roots(tmp_path)
    ui = Ui(runs, data, TOKEN)
    url = serve_on(create_app(ui))
    browser.get(f"{url}/new?token={TOKEN}")
    browser.find_element(By.ID, "name").send_keys("onslurm")
    Select(browser.find_element(By.ID, "data")).select_by_visible_text("xrays")
    Select(browser.find_element(By.ID, "base")).select_by_visible_text("tiny.yaml")
    Select(browser.find_element(By.ID, "site")).select_by_visible_text("local-slurm")
    browser.find_element(By.ID, "start").click()
    _wait(browser, lambda d: d.current_url.endswith("/runs/onslurm"), 60, "the run page")
    assert ui.started["onslurm"].wait(timeout=60) == 0  # xvhpc submit has queued every step
    steps = json.loads((runs / "onslurm" / JOBS).read_text())["steps"]
    ids = [s["job_id"] for s in steps.values()]
    try:
        _cancel_confirmed(browser, url, ids)
    except BaseException:
        subprocess.run(["scancel", *ids], check=False)  # nothing left queued by a failure
        raise
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # sacct records the cancel within a moment
        capsys.readouterr()
        main(["status", str(runs / "onslurm")])
        status = capsys.readouterr().out
        states = {w[0]: w[1] for w in map(str.split, status.splitlines()) if w and w[0] in steps}
        # a step that ended before the click (ingest, on a quick machine) stays COMPLETED
        ended = set(states.values()) <= {"CANCELLED", "COMPLETED"} and len(states) == len(ids)
        if ended and states["train"] == "CANCELLED":
            break
        time.sleep(1)
    assert ended and states["train"] == "CANCELLED", status
    browser.get(f"{url}/runs/onslurm")
    _wait(browser, lambda d: _text(d, "#run-state") == "CANCELLED", 30, "the run's state")


def _cancel_confirmed(browser, url: str, ids: list[str]) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/runs/onslurm")
    browser.find_element(By.LINK_TEXT, "cancel").click()
    assert "Cancel every live job of onslurm?" in _text(browser, "h1")  # the confirmation
    browser.find_element(By.ID, "confirm").click()
    assert f"cancelled {', '.join(ids)}" in _text(browser, "#message")
