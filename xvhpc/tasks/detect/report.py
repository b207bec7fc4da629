"""The detection part of the report (no torch: ``xvhpc report`` stays light)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ...report.html import ci as show


def report_section(eval_dir: Path, m: dict) -> str:
    """HTML for the report: one point's metrics (``m``, its metrics.json) with intervals and
    the drawn sample images of ``eval_dir`` (inline)."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{show(v)}</td></tr>"
        for k, v in m["per_class_ap"].items()
    )
    pics = "".join(
        f'<img alt="{html.escape(s)}" src="data:image/png;base64,{base64.b64encode((eval_dir / s).read_bytes()).decode()}">'
        for s in m.get("samples", [])
        if (eval_dir / s).is_file()
    )
    return (
        f"<h3>Detection, point {m['point']}</h3><p>mAP@[.5:.95] {show(m['map'])}; mAP@.5 {show(m['map50'])} "
        f"on {m['images']} images, {m['boxes']} boxes (95 % bootstrap over {m['unit']}s)</p>"
        f"<table><tr><th>class</th><th>AP@[.5:.95]</th></tr>{rows}</table>"
        f"<p>Green: true boxes; yellow: predicted (class, confidence)</p>{pics}"
    )
