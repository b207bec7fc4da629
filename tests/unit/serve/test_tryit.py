"""The try-it page of ``xvhpc serve`` (GET /), in-process: what it serves, that it loads nothing
from elsewhere and works under a path prefix, and that a model's names cannot inject markup.
The page in a real browser: tests/e2e/test_ui_browser.py."""

from __future__ import annotations

import re

from xvhpc.serve.tryit import CSP, page


def test_the_page_names_the_model_and_loads_only_its_own_files(client) -> None:
    reply = client.get("/")
    assert reply.status_code == 200
    assert reply.headers["content-security-policy"] == CSP
    html = reply.text
    assert "resnet18 classifier" in html and "a, b, c" in html
    assert 'value="0.9"' in html  # the slider starts at the deployed threshold
    # every URL relative: the page works behind a proxy's /node/<host>/<port>/ prefix
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert urls and all(not u.startswith(("/", "http")) for u in urls), urls
    script = client.get("/tryit.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert 'fetch("v1/predict"' in script.text and "http" not in script.text
    assert client.get("/tryit.css").status_code == 200


def test_the_page_serves_what_it_posts(client, tmp_path) -> None:
    """The request the page's script makes (threshold 0, heatmap on) answers every class and
    a heatmap: what the page draws."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), np.uint8)).save(buf, "PNG")
    reply = client.post(
        "/v1/predict",
        files={"file": ("x.png", buf.getvalue(), "image/png")},
        data={"threshold": "0", "heatmap": "true"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert {p["label"] for p in body["predictions"]} == {"a", "b", "c"}
    assert body["heatmap"] and body["decision"] in {"a", "b", "c"}


def test_model_names_cannot_inject_markup() -> None:
    card = {
        "arch": "<script>alert(1)</script>",
        "classes": ['"><img src=x onerror=alert(1)>', "b"],
        "decision_rule": "most probable class",
        "default_threshold": 0.5,
    }
    html = page(card, "classifier", 32)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html
    # the card travels as JSON in an escaped attribute: no quote closes it early
    attribute = re.search(r'data-card="([^"]*)"', html)
    assert attribute and "&#34;" in attribute.group(1)
