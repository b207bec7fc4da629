"""The try-it page of ``xvhpc serve`` (``GET /``): upload an image, see what the model says.

Task-blind on purpose: the page's script posts the file to the same ``/v1/predict`` every client
uses (threshold 0, heatmap on) and draws whatever the answer holds — ranked classes under a
threshold slider, the Grad-CAM overlay, boxes, a label-map mask — so a new task needs no change
here. The page and its script are static files beside this module (no CDN, no build step);
every URL they use is relative, so the page works behind a reverse proxy's path prefix.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
# the page loads nothing from elsewhere; uploads are shown from blob: URLs, answers from data:
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"]),
    )


def _static(name: str, media_type: str) -> Response:
    return Response((HERE / "static" / name).read_bytes(), media_type=media_type,
                    headers=SECURITY_HEADERS)  # fmt: skip


def page(card: dict[str, Any], noun: str, max_upload_mb: float) -> str:
    """The page's HTML for a model card (``GET /v1/model``'s fields): the names are escaped by
    Jinja2's autoescape, the card reaches the script as JSON in a data attribute."""
    template = _templates().get_template("tryit.html")
    card_json = json.dumps(card, sort_keys=True)
    return template.render(card=card, noun=noun, max_upload_mb=max_upload_mb, card_json=card_json)


def add_tryit(app: FastAPI, card: dict[str, Any], noun: str, max_upload_mb: float) -> None:
    """Register ``GET /`` (the page), ``/tryit.js`` and ``/tryit.css`` on the serve app."""
    html = page(card, noun, max_upload_mb)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def tryit() -> HTMLResponse:
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    @app.get("/tryit.js", include_in_schema=False)
    def tryit_js() -> Response:
        return _static("tryit.js", "text/javascript")

    @app.get("/tryit.css", include_in_schema=False)
    def tryit_css() -> Response:
        return _static("tryit.css", "text/css")
