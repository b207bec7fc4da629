"""The report's first screen: a summary that tells the truth (device and autocast as they ran,
headline figures with intervals, every warning counted and linked), and demo data that does
not look like one leaking dataset."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import require
from xvhpc.data.dedupe import NEAR_DISTANCE, dhash, near_duplicates
from xvhpc.data.synth import CLASSES, xray
from xvhpc.pipeline.report import number_warnings

INTERVAL = r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)"  # 0.812 (0.701–0.904)
WINDOW = (1100, 900)  # the first screen of a laptop browser window


def _summary(page: str) -> str:
    return page.split("id='summary'", 1)[1].split("</div>", 1)[0]


def test_the_summary_says_cpu_and_no_autocast_for_a_cpu_run(trained_run: Path) -> None:
    """The spec asks for amp (the default); a CPU rank ran in float32 and the page says so."""
    page = (trained_run / "report.html").read_text()
    summary = _summary(page)
    assert re.search(r"Trained on</td><td>CPU \(\d ranks?\), no autocast", summary), summary
    assert re.search(f"accuracy <b>{INTERVAL}</b>", summary), summary
    assert re.search(r"Warnings</td><td><b>\d+</b> on this page", summary)
    assert "(GPU)" not in page and "per rank (CPU)" in page
    assert re.search(r"amp \(as run\)</td><td>no autocast", page)
    assert page.index("id='summary'") < page.index("Model and hyperparameters")


def test_every_warning_on_the_page_is_counted_and_linked(trained_run: Path) -> None:
    page = (trained_run / "report.html").read_text()
    boxes = re.findall(r'<div class="warn" id="(warning-\d+)">', page)
    links = re.findall(r"<a href='#(warning-\d+)'>", _summary(page))
    assert boxes and links == boxes
    numbered, found = number_warnings("<div class='warn'>⚠ <b>a</b> b</div><div class=\"warn\">c")
    assert [t for _, t in found] == ["a b", "c"]
    assert numbered.count('id="warning-') == 2


def test_demo_images_are_not_near_duplicates(trained_run: Path) -> None:
    """Every pair of 80 demo images (as ingest resizes them) is more than NEAR_DISTANCE dHash
    bits apart, and the demo run's report says its split has no leaks."""
    rng = np.random.default_rng(0)
    images = [xray(c, 128, rng) for c in CLASSES for _ in range(20)]
    small = [
        np.asarray(Image.fromarray(a).resize((64, 64), Image.Resampling.BILINEAR)) for a in images
    ]
    entries = [{"part": str(i), "dhash": dhash(a), "source": str(i)} for i, a in enumerate(small)]
    near = near_duplicates(entries)
    assert near["pairs"] == 0, near["examples"][:3]
    copy = {**entries[0], "part": "other"}
    assert near_duplicates([entries[0], copy])["pairs"] == 1  # the check can fail
    assert NEAR_DISTANCE >= 4
    page = (trained_run / "report.html").read_text()
    assert "No identical or near-duplicate images across the split." in page


def test_the_first_screen_in_headless_chromium(trained_run: Path, tmp_path: Path) -> None:
    """Chromium lays the page out at 1100×900: the summary, with headline intervals and the
    CPU, ends above the fold; a screenshot of that screen is not blank."""
    require("chromium", "the report's first screen in a real browser")
    report = trained_run / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    bottom = re.search(r'data-summary-bottom="(\d+)"', dom)
    assert bottom, dom[:500]
    assert int(bottom.group(1)) <= WINDOW[1], f"the summary ends at {bottom.group(1)} px"
    summary = dom.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert re.search(INTERVAL, summary) and "CPU" in summary, summary
    shot = tmp_path / "first-screen.png"
    subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (WINDOW[1], WINDOW[0]) and pixels.std() > 10, "blank screenshot"
