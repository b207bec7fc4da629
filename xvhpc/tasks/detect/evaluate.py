"""``xvhpc evaluate`` for detection: each point's model on its validation split → COCO mAP,
mAP@.5, per-class AP and precision-recall curves with bootstrap intervals (``metrics.json``),
every box it finds (``predictions.jsonl``) and a few images drawn with predicted and true boxes.
The driver (pipeline/evaluate.py) ranks the points by ``evaluate.rank_by`` (mAP or mAP@.5)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from ...data.roles import role_index
from ...evaluation import EvaluateError, show, sources, split_groups
from ...models.bundle import load_bundle
from ...rundir import PREDICTIONS_STEM, Layout
from ...util import read_json, write_json_atomic, write_text_atomic
from .dataset import DetectionDataset
from .info import INFO
from .metrics import Found, Truth, detection_metrics
from .predict import boxes_json, detect

if TYPE_CHECKING:
    from ...models.bundle import Bundle
    from ...rundir.run import RunDir

SAMPLES = 6  # validation images drawn with their boxes (the report shows them)
TRUE, PREDICTED = (0, 220, 0), (255, 220, 0)


def draw(
    image: np.ndarray, truth: Truth, f: Found, classes: list[str], threshold: float
) -> Image.Image:
    """True boxes in green, predicted ones (≥ threshold) in yellow with class and confidence."""
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")
    pil = pil.resize((pil.width * 4, pil.height * 4), Image.Resampling.NEAREST)
    pen = ImageDraw.Draw(pil)
    for box in truth.boxes:
        pen.rectangle([v * 4 for v in box], outline=TRUE, width=2)
    for item in boxes_json(f, classes, threshold):
        pen.rectangle([v * 4 for v in item["box"]], outline=PREDICTED, width=2)
        pen.text(
            (item["box"][0] * 4 + 2, item["box"][1] * 4 + 1),
            f"{item['label']} {item['confidence']:.2f}",
            fill=PREDICTED,
        )
    return pil


def write_outputs(
    layout: Layout, point: int, images: list[np.ndarray], paths: list[str], groups: list[str],
    truth: list[Truth], found: list[Found], classes: list[str], threshold: float,
) -> None:  # fmt: skip
    """The drawn sample images (samples/<n>.png) and every image's true and predicted boxes
    (predictions.jsonl) under eval/<point>/."""
    out = layout.eval_dir(point)
    layout.eval_samples(point).mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(images):
        draw(image, truth[n], found[n], classes, max(threshold, 0.3)).save(
            layout.eval_samples(point) / f"{n}.png"
        )
    lines = [
        json.dumps(
            {
                "path": p,
                "group": g,
                "truth": boxes_json(Found(t.boxes, np.ones(len(t.labels)), t.labels), classes),
                "predicted": boxes_json(f, classes, threshold),
            }
        )
        for p, g, t, f in zip(paths, groups, truth, found, strict=True)
    ]
    text = "".join(line + "\n" for line in lines)
    write_text_atomic(out / (PREDICTIONS_STEM + INFO.predictions_suffix), text)


def predict_split(
    bundle: Bundle, dataset: DetectionDataset
) -> tuple[list[Truth], list[Found], list[np.ndarray]]:
    """Every record's true and found boxes, and the first ``SAMPLES`` images (to draw)."""
    truth: list[Truth] = []
    found: list[Found] = []
    images: list[np.ndarray] = []
    for start in range(0, len(dataset), 32):
        batch, targets = dataset.collate(
            [dataset[i] for i in range(start, min(start + 32, len(dataset)))]
        )
        found += detect(bundle, batch)
        truth += [Truth(t["boxes"].numpy(), t["labels"].numpy() - 1) for t in targets]
        images += [b.numpy() for b in batch][: max(0, SAMPLES - len(images))]
    return truth, found, images


def evaluate_point(
    run: RunDir, point: int, data: str | None, log: logging.Logger, keep: dict | None = None
) -> dict | None:
    """One point's detection figures on its validation split (``data``: refused, a detector
    is scored on its own split only; ``keep``: unused, detection never pools folds)."""
    if data:
        raise EvaluateError("evaluate --data is for classification only")
    layout = Layout(run.root)
    if not layout.bundle(point).exists():
        log.error("point %d has no trained model at %s", point, layout.point_model(point))
        return None
    bundle = load_bundle(layout.point_model(point))
    spec = run.point(point)
    index = role_index(run.root, spec.data.split, "score")
    truth, found, images = predict_split(bundle, DetectionDataset(index))
    paths = sources(index)
    groups, unit = split_groups(run, paths, log)
    ev = spec.evaluate
    metrics = detection_metrics(truth, found, bundle.classes, groups, ev.bootstrap, ev.seed)
    threshold = spec.deploy.threshold
    write_outputs(layout, point, images, paths, groups, truth, found, bundle.classes, threshold)
    metrics.update(
        {
            "task": INFO.name,
            "point": point,
            "params": run.plan["points"][point],
            "classes": bundle.classes,
            "unit": unit,
            "samples": [
                (layout.eval_samples(point) / f"{n}.png")
                .relative_to(layout.eval_dir(point))
                .as_posix()
                for n in range(len(images))
            ],
            "training": read_json(layout.progress(point), {}),
        }
    )
    write_json_atomic(layout.eval_metrics(point), metrics)
    log.info(
        "point %d: mAP@[.5:.95] %s, mAP@.5 %s on %d images",
        point,
        show(metrics["map"]),
        show(metrics["map50"]),
        len(truth),
    )
    return metrics
