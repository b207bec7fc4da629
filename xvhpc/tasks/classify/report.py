"""The classifier's part of ``xvhpc report`` (torch-free until a heatmap is drawn): each point's
figures with intervals, confusion matrix, ROC and reliability curves, operating point and worst
errors; the cross-validation section; Grad-CAM heatmaps of the published model."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ...evaluation import best_point, crossval_intro, pooling, spread_table
from ...report.html import ci, img_tag, png, table, value
from ...rundir import PREDICTIONS, Layout
from ...spec.points import cv_points
from ...util import read_json
from .metrics import MIN_SUPPORT, SPREAD

if TYPE_CHECKING:
    from ...rundir.run import RunDir

WORST = 10  # worst errors listed per point


def _exact(entry: object) -> str:
    ci = entry.get("exact_ci") if isinstance(entry, dict) else None
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "n/a"


def _warnings(metrics: dict) -> str:
    items = list(metrics.get("warnings", []))
    if not items:  # metrics.json written before warnings existed: derive the small-class ones
        items = [
            f"class {c} has only {v['support']} evaluated image(s) (< {MIN_SUPPORT})"
            for c, v in metrics.get("per_class", {}).items()
            if v.get("support", 0) < MIN_SUPPORT
        ]
    return "".join(f'<div class="warn">⚠ {html.escape(w)}</div>' for w in items)


def read_predictions(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def worst_errors(rows: list[dict], count: int = WORST) -> list[dict]:
    """Misclassified images, the lowest probability given to the true class first."""
    wrong = [r for r in rows if r.get("correct") == "0"]
    return sorted(wrong, key=lambda r: float(r.get(f"p_{r['true']}", 0) or 0))[:count]


def roc_curves(rows: list[dict], classes: list[str], op: dict | None) -> str:
    """One-vs-rest ROC curve per class; the operating point marked on its class's curve."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    truth = np.array([r["true"] for r in rows])
    for c in classes:
        positive = truth == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, np.array([float(r[f"p_{c}"]) for r in rows]))
        ax.plot(fpr, tpr, label=c)
    if op and op.get("threshold") is not None:
        sens, spec = value(op["sensitivity"]), value(op["specificity"])
        if sens is not None and spec is not None:  # undefined without images of both kinds
            ax.plot(
                [1 - spec], [sens], "k*", markersize=14, label=f"operating point ({op['positive']})"
            )
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC (one class vs the rest)")
    ax.legend(fontsize=8, loc="lower right")
    return img_tag(png(fig), "ROC curves")


def reliability_diagram(calibration: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    for key, label, style in (
        ("reliability", "model", "o-"),
        ("reliability_calibrated", "temperature-scaled", "s--"),
    ):
        bins = calibration.get(key) or []
        if bins:
            ax.plot(
                [b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, label=label
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability ({calibration.get('bins', 15)} bins)")
    ax.legend(fontsize=8, loc="upper left")
    return img_tag(png(fig), "reliability diagram")


def figures_text(metrics: dict) -> str:
    """The headline figures with their intervals, and how the intervals were drawn."""
    boot = metrics.get("bootstrap", {})
    unit = boot.get("unit", "image")
    parts = [
        f"<p>accuracy <b>{ci(metrics['accuracy'])}</b>, balanced accuracy {ci(metrics['balanced_accuracy'])}, "
        f"macro F1 {ci(metrics['macro_f1'])}, ROC-AUC {ci(metrics['roc_auc'])} on {metrics['samples']} "
        f"validation images ({metrics.get('groups', metrics['samples'])} {'patients/groups' if unit != 'image' else 'independent images'})</p>"
    ]
    if boot:
        parts.append(
            f"<p class='note'>In brackets: 95 % percentile bootstrap intervals, {boot['resamples']} resamples "
            f"(seed {boot['seed']}) of the {'patients/groups: all images of a patient are drawn together' if unit != 'image' else 'images'}.</p>"
        )
    return "\n".join(parts)


def selection_note(metrics: dict) -> str:
    """Which data chose the checkpoint and which scored it: a warning when they are the same."""
    chosen = metrics.get("selection")
    if chosen:
        return (
            f"<div class='{'warn' if chosen['optimistic'] else 'note'}'>"
            f"{'⚠ Selection bias: ' if chosen['optimistic'] else ''}the checkpoint was chosen on "
            f"{html.escape(chosen['chose'])}; these figures are measured on {html.escape(chosen['scored'])}"
            f"{' (the same data: optimistic)' if chosen['optimistic'] else ', which the choice never saw'}.</div>"
        )
    if metrics.get("data", "validation split") == "validation split":
        return (
            "<div class='warn'>⚠ Selection bias: training kept the checkpoint with the best accuracy "
            "on this same validation split (and a sweep publishes the best point by it), so these "
            "figures are optimistic; confirm on data the choice never saw "
            "(<code>xvhpc evaluate --data</code>).</div>"
        )
    return ""


def per_class_table(metrics: dict) -> str:
    """Precision, recall, F1, support and ROC-AUC of each class, with intervals."""
    rows = [
        [c, ci(v["precision"]), ci(v["recall"]), ci(v["f1"]), v["support"], ci(v["roc_auc"])]
        for c, v in metrics["per_class"].items()
    ]
    header = ["class", "precision", "recall (sensitivity)", "F1", "support", "ROC-AUC"]
    return table(header, rows)


def calibration_text(cal: dict) -> str:
    """The expected calibration error, before and after temperature scaling."""
    text = f"Expected calibration error (ECE, {cal['bins']} bins): {ci(cal['ece'])}"
    if cal.get("ece_calibrated"):
        how = (
            "cross-fitted: each half of the validation groups scaled by the temperature fitted on the other half"
            if cal.get("cross_fit_temperatures")
            else "with the model's stored temperature"
        )
        text += (
            f"; after temperature scaling (T = {cal['temperature']:.3f}) {ci(cal['ece_calibrated'])} ({how}). "
            "The deployed model (serve, export) applies this temperature."
        )
    return f"<p>{html.escape(text)}</p>"


def operating_point_text(op: dict) -> str:
    """The operating point's rule and figures (exact and cross-fitted), or why none was set."""
    if "error" in op:
        return f'<div class="warn">⚠ operating point not set: {html.escape(op["error"])}</div>'
    target = (
        f"sensitivity ≥ {op['min_sensitivity']}"
        if op.get("min_sensitivity") is not None
        else f"specificity ≥ {op['min_specificity']}"
    )
    parts = [
        f"<p><b>Operating point</b> for {html.escape(op['positive'])} ({html.escape(target)}): "
        f"{html.escape(op['positive'])} when its probability ≥ {op['threshold']:.4f}, else the most probable other class. "
        f"Sensitivity {ci(op['sensitivity'])}, specificity {ci(op['specificity'])} on the images it was chosen on "
        f"(exact Clopper–Pearson, images as independent: {_exact(op['sensitivity'])} and {_exact(op['specificity'])}).</p>"
    ]
    cross = op.get("cross_fitted")
    if cross:
        parts.append(
            f"<p class='note'>Chosen on one half of the patients/groups and measured on the other (both ways): "
            f"sensitivity {cross['sensitivity']:.3f}, specificity {cross['specificity']:.3f} — "
            "closer to what new patients will see. This rule is the default decision of serve's /v1/predict and the export sidecar.</p>"
        )
    return "\n".join(parts)


def predictions_text(rows: list[dict], href: str) -> str:
    """The link to the per-image predictions file and the worst errors among them."""
    parts = [
        f"<p>Per-image predictions: <a href='{html.escape(href)}'>{html.escape(href)}</a> ({len(rows)} rows).</p>"
    ]
    worst = worst_errors(rows)
    if worst:
        parts.append(
            f"<h3>Worst errors (lowest probability given to the true class, {len(worst)} shown)</h3>"
        )
        shown = [
            [
                r["path"],
                "" if r["group"].startswith("image:") else r["group"],
                r["true"],
                r["predicted"],
                float(r[f"p_{r['true']}"]),
                float(r[f"p_{r['predicted']}"]),
            ]
            for r in worst
        ]
        header = ["image", "group", "true", "predicted", "P(true)", "P(predicted)"]
        parts.append(table(header, shown))
    return "\n".join(parts)


def details_section(run: RunDir, point: int, metrics: dict, folder: Path | None = None) -> str:
    """Headline figures with intervals, warnings, per-class table, calibration, operating point,
    ROC curves, the predictions file and the worst errors of one point (``folder``: its
    eval/ folder when not the point's own, e.g. pooled folds)."""
    folder = folder or Layout(run.root).eval_dir(point)
    file = folder / metrics.get("predictions", PREDICTIONS)
    rows = read_predictions(file)
    op = metrics.get("operating_point")
    cal = metrics.get("calibration")
    figures = []
    if rows:
        figures.append(roc_curves(rows, metrics["classes"], op))
    if cal:
        figures.append(reliability_diagram(cal))
    parts = [
        figures_text(metrics),
        _warnings(metrics),
        selection_note(metrics),
        confusion(metrics),
        per_class_table(metrics),
    ]
    if figures:
        parts.append(
            '<div class="grid" style="gap:24px">'
            + "".join(f"<div>{f}</div>" for f in figures)
            + "</div>"
        )
    parts.append(calibration_text(cal) if cal else "")
    parts.append(operating_point_text(op) if op else "")
    shown = file.relative_to(run.root).as_posix()  # eval/<point>/predictions.csv
    parts.append(predictions_text(rows, shown) if rows else "")
    return "\n".join(p for p in parts if p)


def worst_error_heatmaps(run: RunDir, point: int, count: int) -> str:
    """The published model's worst validation errors with Grad-CAM overlays (shard images)."""
    layout = Layout(run.root)
    metrics = read_json(layout.eval_metrics(point))
    if count == 0 or not metrics or not layout.bundle().exists():
        return ""
    worst = [
        r
        for r in worst_errors(
            read_predictions(layout.eval_dir(point) / metrics.get("predictions", PREDICTIONS)),
            count,
        )
        if r.get("shard") and r.get("row")
    ]
    if not worst:
        return "<p>No validation errors.</p>"
    import h5py
    import torch

    from ...data.dataset import to_model_input
    from ...models.bundle import load_bundle, overlay_png

    bundle = load_bundle(layout.model)
    cards = []
    for r in worst:
        with h5py.File(layout.shards / r["shard"], "r") as h5:
            image = np.asarray(h5["images"][int(r["row"])])
        x = to_model_input(torch.from_numpy(image[None]), bundle.device)
        pred = bundle.classes.index(r["predicted"])
        overlay = overlay_png(image, bundle.heatmap(x, pred))
        src = "data:image/png;base64," + base64.b64encode(overlay).decode()
        confidence = float(r["p_" + r["predicted"]])
        cards.append(
            f'<div class="card">{img_tag(src, "heatmap")}<br>✘ {html.escape(r["path"])}: true <b>{html.escape(r["true"])}</b>, '
            f"predicted <b>{html.escape(r['predicted'])}</b> ({confidence:.2f}); heatmap of the predicted class</div>"
        )
    return '<div class="grid">' + "".join(cards) + "</div>"


def confusion(metrics: dict) -> str:
    import matplotlib.pyplot as plt

    cm = np.array(metrics["confusion_matrix"])
    classes = metrics["classes"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 1 + 0.8 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    return img_tag(png(fig), "confusion matrix")


def samples(run: RunDir, count: int) -> str:
    """Validation images with prediction, confidence and a Grad-CAM overlay."""
    if count == 0 or not Layout(run.root).bundle().exists():
        return "<p>No samples (no model or heatmap_samples: 0).</p>"
    from ...data.dataset import ShardDataset, to_model_input
    from ...data.roles import role_index
    from ...models.bundle import load_bundle, overlay_png

    bundle = load_bundle(Layout(run.root).model)
    split = run.point(best_point(run)).data.split  # with folds: the deployed fold's held-out
    dataset = ShardDataset(role_index(run.root, split, "score"))
    if not len(dataset):
        return "<p>No held-out images score the published model (a final fit on every fold).</p>"
    picks: NDArray[np.int_] = np.linspace(
        0, len(dataset) - 1, num=min(count, len(dataset)), dtype=int
    )
    cards = []
    for i in picks:
        image, label = dataset[int(i)]
        x = to_model_input(image[None], bundle.device)
        probs = bundle.probabilities(x)[0]
        pred = int(probs.argmax())
        cam = bundle.heatmap(x, pred)
        overlay = overlay_png(image.numpy(), cam)
        src = "data:image/png;base64," + base64.b64encode(overlay).decode()
        ok = "✔" if pred == label else "✘"
        cards.append(
            f'<div class="card">{img_tag(src, "heatmap")}<br>{ok} true <b>{html.escape(bundle.classes[label])}</b>, '
            f"predicted <b>{html.escape(bundle.classes[pred])}</b> ({probs[pred]:.2f})</div>"
        )
    return '<div class="grid">' + "".join(cards) + "</div>"


def crossval_section(run: RunDir, manifest: dict) -> str:
    """The report's cross-validation part: folds, pooled figures per sweep point with their
    spread across folds, which data chose and scored, and which model is deployed."""
    if not pooling(run.spec):
        return ""
    parts = crossval_intro(run, manifest)
    for c, group in enumerate(cv_points(run.plan["points"])):
        metrics = read_json(Layout(run.root).pooled_metrics(c))
        if not metrics:
            continue
        parts.append(spread_table(metrics, SPREAD))
        parts.append(
            f"<p class='note'>Deployed model: {html.escape(metrics['deployed'])} — the pooled "
            "figures estimate how this training procedure does on new patients; its decision "
            "rule (temperature, operating point) is fitted on the pooled out-of-fold "
            "predictions.</p>"
        )
        parts.append(
            details_section(run, group.folds[0], metrics, folder=Layout(run.root).pooled_dir(c))
        )
    return "\n".join(parts)


def heatmap_sections(run: RunDir, best: int) -> str:
    """Grad-CAM overlays: the published model's worst validation errors, then validation
    samples (``evaluate.heatmap_samples`` of each)."""
    count = run.spec.evaluate.heatmap_samples
    parts = []
    heatmaps = worst_error_heatmaps(run, best, count)
    if heatmaps:
        parts.append(
            f"<h2>Worst validation errors with heatmaps (published model, point {best})</h2>"
        )
        parts.append(heatmaps)
    parts.append("<h2>Validation samples with heatmaps (best model)</h2>")
    parts.append(samples(run, count))
    return "\n".join(parts)
