"""``xvhpc evaluate`` for segmentation: each point's model on its validation split → per-class
IoU, Dice and HD95, their means and pixel accuracy with bootstrap intervals over images (or groups)
and the pixel confusion matrix (``metrics.json``), every image's figures (``predictions.csv``)
and a few images with their true and predicted masks drawn over them (the report shows them).
The driver (pipeline/evaluate.py) ranks the points by ``evaluate.rank_by`` (miou or dice)."""

from __future__ import annotations

import csv
import io
import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ...data.roles import role_index
from ...evaluation import EvaluateError, show, sources, split_groups
from ...models.bundle import load_bundle
from ...rundir import PREDICTIONS_STEM, Layout
from ...util import read_json, write_json_atomic, write_text_atomic
from .dataset import NO_INSTANCES, SegmentationDataset
from .draw import overlay
from .info import INFO, is_instance
from .maskap import found_annotations, mask_ap, truth_annotations
from .maskrcnn import objects_of
from .metrics import confusion, hd95, scores, segmentation_metrics
from .predict import logits_of

if TYPE_CHECKING:
    from ...models.bundle import Bundle
    from ...rundir.run import RunDir

SAMPLES = 6  # validation images drawn with their masks (the report shows them)


def side_by_side(image: np.ndarray, truth: np.ndarray, found: np.ndarray) -> Image.Image:
    """True mask (left) and predicted mask (right) over the image, 4× nearest-neighbour."""
    both = np.concatenate([overlay(image, truth), np.full((image.shape[0], 2, 3), 255, np.uint8),
                           overlay(image, found)], axis=1)  # fmt: skip
    pil = Image.fromarray(both)
    return pil.resize((pil.width * 4, pil.height * 4), Image.Resampling.NEAREST)


def predict_split(
    bundle: Bundle, dataset: SegmentationDataset, k: int, objects: list | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Each record's K×K confusion matrix ``(n, K, K)``, its per-class HD95 ``(n, K)`` and the
    first ``SAMPLES`` (image, true mask, predicted mask). A Mask R-CNN's predicted mask is the
    label map its objects paint; ``objects`` then collects each image's true and predicted
    objects as COCO annotations (``maskap.py``)."""
    per_image: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    instance = is_instance(bundle.meta["arch"])
    for start in range(0, len(dataset), 16):
        idx = np.arange(start, min(start + 16, len(dataset)))
        images = torch.stack([dataset[int(i)][0] for i in idx])
        masks = dataset.masks(idx)
        predicted: list[np.ndarray] | np.ndarray
        if instance:
            predicted = _objects(bundle, dataset, idx, images, k, objects)
        else:
            predicted = logits_of(bundle, images).argmax(1).numpy()
        for image, truth, found in zip(images.numpy(), masks, predicted, strict=True):
            per_image.append(confusion(truth, found, k))
            distances.append(hd95(truth, found, k))
            if len(drawn) < SAMPLES:
                drawn.append((image, truth, found))
    return (
        np.asarray(per_image, dtype=np.int64).reshape(-1, k, k),
        np.asarray(distances, dtype=np.float64).reshape(-1, k),
        drawn,
    )


def _objects(
    bundle: Bundle, dataset: SegmentationDataset, idx: np.ndarray, images: torch.Tensor, k: int,
    objects: list | None,
) -> list[np.ndarray]:  # fmt: skip
    """A Mask R-CNN's painted label maps of ``images``; their true and found objects appended
    to ``objects`` (pairs of COCO annotation lists, image numbers continuing)."""
    found = objects_of(bundle.model, images, bundle.device)
    ids, tables = dataset.id_maps(idx)
    if tables is None:
        raise EvaluateError(NO_INSTANCES)
    if objects is not None:
        for n, f in enumerate(found):
            i = len(objects)
            objects.append((truth_annotations(i, ids[n], tables[n], k),
                            found_annotations(i, f.masks, f.labels, f.scores)))  # fmt: skip
    return [f.painted() for f in found]


def per_image_csv(
    paths: list[str], groups: list[str], per_image: np.ndarray, distances: np.ndarray
) -> str:
    """predictions.csv: each image's pixels, pixel accuracy, IoU, Dice and HD95 over its
    foreground classes (empty: undefined)."""
    s = scores(per_image)
    with warnings.catch_warnings():  # an image with no foreground class defined: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        hd = np.nanmean(distances[:, 1:], axis=1) if distances.shape[1] > 1 else distances[:, 0]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "group", "pixels", "pixel_accuracy", "miou", "dice", "hd95"])
    for i, (p, g) in enumerate(zip(paths, groups, strict=True)):
        figures = [s["pixel_accuracy"][i], s["miou"][i], s["dice_mean"][i], hd[i]]
        w.writerow([p, g, int(per_image[i].sum()),
                    *("" if np.isnan(v) else round(float(v), 6) for v in figures)])  # fmt: skip
    return buf.getvalue()


def evaluate_point(
    run: RunDir, point: int, data: str | None, log: logging.Logger, keep: dict | None = None
) -> dict | None:
    """One point's segmentation figures on its validation split (``data``: refused in this
    version, a segmenter is scored on its own split). ``keep``: where the per-image figures
    are kept for pooling the folds of a cross-validation (``crossval.pool``)."""
    if data:
        raise EvaluateError("evaluate --data is for classification only")
    layout = Layout(run.root)
    if not layout.bundle(point).exists():
        log.error("point %d has no trained model at %s", point, layout.point_model(point))
        return None
    bundle = load_bundle(layout.point_model(point))
    spec = run.point(point)
    index = role_index(run.root, spec.data.split, "score")
    classes = bundle.classes
    objects: list = []
    per_image, distances, drawn = predict_split(
        bundle, SegmentationDataset(index), len(classes), objects
    )
    paths = sources(index)
    groups, unit = split_groups(run, paths, log)
    if keep is not None:
        keep[point] = {"per_image": per_image, "distances": distances, "paths": paths,
                       "groups": groups, "objects": objects}  # fmt: skip
    ev = spec.evaluate
    metrics = segmentation_metrics(
        per_image, classes, groups, ev.bootstrap, ev.seed, unit, distances
    )
    if objects:  # a Mask R-CNN: mask AP beside the figures of its painted label maps
        metrics.update(
            mask_ap([t for t, _ in objects], [f for _, f in objects], classes, groups,
                    ev.bootstrap, ev.seed, unit)
        )  # fmt: skip
    samples = layout.eval_samples(point)
    samples.mkdir(parents=True, exist_ok=True)
    for n, (image, truth, found) in enumerate(drawn):
        side_by_side(image, truth, found).save(samples / f"{n}.png")
    write_text_atomic(
        layout.eval_dir(point) / (PREDICTIONS_STEM + INFO.predictions_suffix),
        per_image_csv(paths, groups, per_image, distances),
    )
    metrics.update(
        {
            "task": INFO.name,
            "point": point,
            "params": run.plan["points"][point],
            "classes": classes,
            "unit": unit,
            "samples": [
                (samples / f"{n}.png").relative_to(layout.eval_dir(point)).as_posix()
                for n in range(len(drawn))
            ],
            "training": read_json(layout.progress(point), {}),
        }
    )
    write_json_atomic(layout.eval_metrics(point), metrics)
    log.info(
        "point %d: mIoU %s, Dice %s, HD95 %s px on %d images",
        point,
        show(metrics["miou"]),
        show(metrics["dice"]),
        show(metrics.get("hd95", {})),
        len(per_image),
    )
    if "mask_map" in metrics:
        log.info(
            "point %d: mask AP@[.5:.95] %s, AP@.5 %s over %d objects", point,
            show(metrics["mask_map"]), show(metrics["mask_map50"]), metrics["objects"],
        )  # fmt: skip
    return metrics
