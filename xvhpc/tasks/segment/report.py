"""The segmentation part of the report (no torch: ``xvhpc report`` stays light)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ...report.html import ci as show
from ...report.html import table


def report_section(eval_dir: Path, m: dict) -> str:
    """HTML for one point's metrics (``m``, its metrics.json): mIoU, Dice, HD95 and pixel
    accuracy with intervals, the per-class table, the pixel confusion matrix and the drawn validation
    images of ``eval_dir`` (inline)."""
    classes = m["classes"]
    hd = m.get("per_class_hd95", {})  # metrics.json of an earlier version: no HD95
    per_class = table(
        ["class", "IoU (95 % CI)", "Dice (95 % CI)", "HD95 px (95 % CI)"],
        [
            [c, show(m["per_class_iou"][c]), show(m["per_class_dice"][c]), show(hd.get(c, {}))]
            for c in classes
        ],
    )
    distance = f"; HD95 {show(m['hd95'])} px" if "hd95" in m else ""
    matrix = table(
        ["true \\ predicted", *classes],
        [[c, *row] for c, row in zip(classes, m["confusion"], strict=True)],
    )
    pics = "".join(
        f'<img alt="{html.escape(s)}" src="data:image/png;base64,{base64.b64encode((eval_dir / s).read_bytes()).decode()}">'
        for s in m.get("samples", [])
        if (eval_dir / s).is_file()
    )
    return (
        f"<h3>Segmentation, point {m['point']}</h3>{_mask_ap(m)}<p>mIoU {show(m['miou'])}; mean Dice "
        f"{show(m['dice'])}{distance}; pixel accuracy {show(m['pixel_accuracy'])} on {m['images']} images, "
        f"{m['pixels']} scored pixels (95 % bootstrap over {html.escape(str(m['unit']))}s; means "
        f"over the classes present)</p>{per_class}<p>Pixel confusion matrix</p>{matrix}"
        f"<p>Each image: true mask (left), predicted mask (right)</p>{pics}"
    )


def _mask_ap(m: dict) -> str:
    """A Mask R-CNN's mask AP (COCO segm) with intervals and per class; "" for semantic runs
    (whose label maps the figures below are; for Mask R-CNN: the map its objects paint)."""
    if "mask_map" not in m:
        return ""
    rows = [[c, show(v)] for c, v in m["per_class_mask_ap"].items()]
    return (
        f"<p>Instance masks (Mask R-CNN): mask AP@[.5:.95] {show(m['mask_map'])}; AP@.5 "
        f"{show(m['mask_map50'])} over {m['objects']} objects (COCO segm, 95 % bootstrap over "
        f"{html.escape(str(m['unit']))}s). The figures below score the label map the objects "
        f"paint (score ≥ .5, mask ≥ .5).</p>{table(['class', 'mask AP (95 % CI)'], rows)}"
    )
