"""Instance masks as one uint8 map per image, so they go through semantic segmentation's own
resize, tiles and augmentation unchanged (nearest-neighbour: ids are never blended).

An *instance-id map* holds 0 where no object is, ``1..N`` for the image's objects (COCO
annotations, painted in order: a later one covers an earlier one, as the semantic label map
does) and 255 (``IGNORE``) for crowd regions and padding. Beside it, a *class table* of 256
entries gives each id's class (``table[0] = 0``, background; ``table[255] = 255``), so
``table[ids]`` is exactly the semantic label map. Boxes, labels and binary masks per object are
derived from the map after every geometric step: an object a crop or tile cut away has no pixel
left and simply vanishes, one cut in two keeps its id and its box is its remaining pixels'."""

from __future__ import annotations

import json
import warnings

import numpy as np

from .info import IGNORE

MAX_INSTANCES = IGNORE - 1  # ids 1..254 (0: none, 255: ignore)
SCORE_AT, MASK_AT = 0.5, 0.5  # a predicted object counts from this score, its mask from this


def decode_segmentation(text: str, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (JSON text: polygons, RLE counts as a list or a string) as a
    boolean H×W mask (pycocotools); ``ValueError`` when its RLE size is not the image's."""
    from pycocotools import mask as coco

    seg = json.loads(text)
    if isinstance(seg, list):
        rle = coco.merge(coco.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = coco.frPyObjects(seg, *seg["size"])
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    if list(rle["size"]) != [height, width]:
        raise ValueError(f"RLE size {rle['size']} is not the image's {height}x{width}")
    with warnings.catch_warnings():  # pycocotools' Cython __array__ under NumPy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(coco.decode(rle)).astype(bool)


def coco_instances(height: int, width: int, drawn: tuple) -> tuple[np.ndarray, np.ndarray, str]:
    """(instance-id map, class table, note) of COCO annotations ``(class, segmentation JSON,
    crowd)``: objects get ids 1..N in order, crowd regions 255 last. Past ``MAX_INSTANCES``
    objects an image keeps its classes but not its objects (each class one id: the label map
    stays exact) and the note says so."""
    ids = np.zeros((height, width), np.uint8)
    table = np.zeros(256, np.uint8)
    table[IGNORE] = IGNORE
    objects = [(c, t) for c, t, crowd in drawn if not crowd]
    merged = len(objects) > MAX_INSTANCES
    note = (
        f"{len(objects)} objects: more than {MAX_INSTANCES}, so each class is one instance"
        if merged
        else ""
    )
    for n, (cls, text) in enumerate(objects, start=1):
        ids[decode_segmentation(text, height, width)] = cls if merged else n
        table[cls if merged else n] = cls
    for _, text, crowd in drawn:
        if crowd:
            ids[decode_segmentation(text, height, width)] = IGNORE
    return ids, table, note


def class_map(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The semantic label map of an instance-id map (255 stays 255)."""
    return np.asarray(table, np.uint8)[ids]


def instance_targets(ids: np.ndarray, table: np.ndarray) -> dict[str, np.ndarray]:
    """Each object still present in ``ids``: its box (x0, y0, x1, y1, pixel edges: a one-pixel
    object has a box of 1×1), its class (the table's, ≥ 1) and its binary mask (n×H×W uint8);
    ids whose class is 0 (background) are no object."""
    present = [int(v) for v in np.unique(ids) if 0 < v < IGNORE and table[v] > 0]
    height, width = ids.shape
    masks = np.zeros((len(present), height, width), np.uint8)
    boxes = np.zeros((len(present), 4), np.float32)
    for n, v in enumerate(present):
        masks[n] = ids == v
        ys, xs = np.nonzero(masks[n])
        boxes[n] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    labels = np.asarray([int(table[v]) for v in present], np.int64)
    return {"boxes": boxes, "labels": labels, "masks": masks}


def paint(
    masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, shape: tuple[int, int],
    score_at: float = SCORE_AT, mask_at: float = MASK_AT,
) -> np.ndarray:  # fmt: skip
    """The label map of predicted instances: each with score ≥ ``score_at`` paints its class
    where its mask probability is ≥ ``mask_at``, the most confident last (on top); 0 elsewhere.
    ``masks``: n×H×W probabilities; ``labels``: classes (≥ 1)."""
    out = np.zeros(shape, np.uint8)
    for n in np.argsort(scores, kind="stable"):
        if scores[n] >= score_at:
            out[masks[n] >= mask_at] = int(labels[n])
    return out
