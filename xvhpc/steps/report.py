"""``xvhpc report``: one self-contained report.html (plots and images embedded)."""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..rundir import Layout
from ..sweeps.board import params_text
from ..sweeps.board import report_section as sweep_section
from ..tasks.detect.report import report_section as detection_section
from ..util import read_json, write_text_atomic
from .common import RunDir, setup_logging
from .crossval import crossval_section, near_duplicates_note, published_metrics
from .metrics import MIN_SUPPORT, value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WORST = 10  # worst errors listed per point

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{width:230px;font-size:13px}pre{background:#f7f7f7;padding:1em;overflow:auto}
.warn{background:#fff3cd;border:1px solid #e0b100;padding:.5em 1em;margin:.5em 0}.note{color:#555;font-size:13px}
.summary{border:2px solid #4a6fa5;border-radius:6px;padding:.6em 1.2em;margin:1em 0;background:#f6f9fd}
.summary table{border:none}.summary td{border:none;padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.summary td:first-child{font-weight:600;white-space:nowrap}.headline{font-size:1.15em}"""
SUMMARY_MARK = "<!-- xvhpc: summary -->"


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img_tag(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


# the leaderboard's columns per task (evaluate writes these keys into leaderboard.json rows)
LEADERBOARD = {
    "classify": {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced accuracy",
        "macro_f1": "macro F1",
        "roc_auc": "ROC-AUC",
    },
    "detect": {"map": "mAP@[.5:.95]", "map50": "mAP@.5"},
}


def _ci(entry: dict[str, Any] | float | None) -> str:
    """``0.812 (0.701–0.904)``: a figure with its 95 % interval (plain floats as they are)."""
    v = value(entry)
    if v is None:
        return "n/a"
    if isinstance(entry, dict) and entry.get("ci_low") is not None:
        return f"{v:.3f} ({entry['ci_low']:.3f}–{entry['ci_high']:.3f})"
    return f"{v:.3f}"


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


def provenance_table(prov: dict) -> str:
    sw = prov.get("software", {})
    ranks = prov.get("training_ranks", [])
    rows = [
        ["xvhpc", sw.get("xvhpc")],
        ["python", sw.get("python")],
        ["torch / torchvision", f"{sw.get('torch')} / {sw.get('torchvision')}"],
        ["CUDA / cuDNN", f"{sw.get('cuda') or '-'} / {sw.get('cudnn') or '-'}"],
        ["scikit-learn / numpy", f"{sw.get('scikit-learn')} / {sw.get('numpy')}"],
        ["evaluated on host", f"{prov.get('host')} ({sw.get('platform')})"],
        ["GPUs at evaluation", ", ".join(sw.get("gpus") or []) or "none"],
        ["site", prov.get("site")],
        ["spec hash", prov.get("spec_hash")],
        ["seeds", json.dumps(prov.get("seeds", {}), sort_keys=True)],
        [
            "training ranks",
            "; ".join(
                ", ".join(
                    f"{k} {v}" for k, v in sorted(r.items()) if not isinstance(v, dict | list)
                )
                for r in ranks
            )
            or "not recorded",
        ],
    ]
    return _table(["provenance", "value"], rows)


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
    return _img_tag(_png(fig), "ROC curves")


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
    return _img_tag(_png(fig), "reliability diagram")


def details_section(run: RunDir, point: int, metrics: dict, folder: str | None = None) -> str:
    """Headline figures with intervals, warnings, per-class table, calibration, operating point,
    ROC curves, the predictions file and the worst errors of one point (``folder``: its
    eval/ folder when not the point's own, e.g. pooled folds)."""
    layout = Layout(run.root)
    folder = folder or str(point)
    boot = metrics.get("bootstrap", {})
    unit = boot.get("unit", "image")
    parts = [
        f"<p>accuracy <b>{_ci(metrics['accuracy'])}</b>, balanced accuracy {_ci(metrics['balanced_accuracy'])}, "
        f"macro F1 {_ci(metrics['macro_f1'])}, ROC-AUC {_ci(metrics['roc_auc'])} on {metrics['samples']} "
        f"validation images ({metrics.get('groups', metrics['samples'])} {'patients/groups' if unit != 'image' else 'independent images'})</p>"
    ]
    if boot:
        parts.append(
            f"<p class='note'>In brackets: 95 % percentile bootstrap intervals, {boot['resamples']} resamples "
            f"(seed {boot['seed']}) of the {'patients/groups: all images of a patient are drawn together' if unit != 'image' else 'images'}.</p>"
        )
    parts.append(_warnings(metrics))
    chosen = metrics.get("selection")
    if chosen:
        parts.append(
            f"<div class='{'warn' if chosen['optimistic'] else 'note'}'>"
            f"{'⚠ Selection bias: ' if chosen['optimistic'] else ''}the checkpoint was chosen on "
            f"{html.escape(chosen['chose'])}; these figures are measured on {html.escape(chosen['scored'])}"
            f"{' (the same data: optimistic)' if chosen['optimistic'] else ', which the choice never saw'}.</div>"
        )
    elif metrics.get("data", "validation split") == "validation split":
        parts.append(
            "<div class='warn'>⚠ Selection bias: training kept the checkpoint with the best accuracy "
            "on this same validation split (and a sweep publishes the best point by it), so these "
            "figures are optimistic; confirm on data the choice never saw "
            "(<code>xvhpc evaluate --data</code>).</div>"
        )
    parts.append(confusion(metrics))
    parts.append(
        _table(
            ["class", "precision", "recall (sensitivity)", "F1", "support", "ROC-AUC"],
            [
                [
                    c,
                    _ci(v["precision"]),
                    _ci(v["recall"]),
                    _ci(v["f1"]),
                    v["support"],
                    _ci(v["roc_auc"]),
                ]
                for c, v in metrics["per_class"].items()
            ],
        )
    )
    rows = read_predictions(
        layout.root / "eval" / folder / metrics.get("predictions", "predictions.csv")
    )
    op = metrics.get("operating_point")
    cal = metrics.get("calibration")
    figures = []
    if rows:
        figures.append(roc_curves(rows, metrics["classes"], op))
    if cal:
        figures.append(reliability_diagram(cal))
    if figures:
        parts.append(
            '<div class="grid" style="gap:24px">'
            + "".join(f"<div>{f}</div>" for f in figures)
            + "</div>"
        )
    if cal:
        text = f"Expected calibration error (ECE, {cal['bins']} bins): {_ci(cal['ece'])}"
        if cal.get("ece_calibrated"):
            how = (
                "cross-fitted: each half of the validation groups scaled by the temperature fitted on the other half"
                if cal.get("cross_fit_temperatures")
                else "with the model's stored temperature"
            )
            text += (
                f"; after temperature scaling (T = {cal['temperature']:.3f}) {_ci(cal['ece_calibrated'])} ({how}). "
                "The deployed model (serve, export) applies this temperature."
            )
        parts.append(f"<p>{html.escape(text)}</p>")
    if op:
        if "error" in op:
            parts.append(
                f'<div class="warn">⚠ operating point not set: {html.escape(op["error"])}</div>'
            )
        else:
            target = (
                f"sensitivity ≥ {op['min_sensitivity']}"
                if op.get("min_sensitivity") is not None
                else f"specificity ≥ {op['min_specificity']}"
            )
            parts.append(
                f"<p><b>Operating point</b> for {html.escape(op['positive'])} ({html.escape(target)}): "
                f"{html.escape(op['positive'])} when its probability ≥ {op['threshold']:.4f}, else the most probable other class. "
                f"Sensitivity {_ci(op['sensitivity'])}, specificity {_ci(op['specificity'])} on the images it was chosen on "
                f"(exact Clopper–Pearson, images as independent: {_exact(op['sensitivity'])} and {_exact(op['specificity'])}).</p>"
            )
            cross = op.get("cross_fitted")
            if cross:
                parts.append(
                    f"<p class='note'>Chosen on one half of the patients/groups and measured on the other (both ways): "
                    f"sensitivity {cross['sensitivity']:.3f}, specificity {cross['specificity']:.3f} — "
                    "closer to what new patients will see. This rule is the default decision of serve's /v1/predict and the export sidecar.</p>"
                )
    if rows:
        href = f"eval/{folder}/{metrics.get('predictions', 'predictions.csv')}"
        parts.append(
            f"<p>Per-image predictions: <a href='{html.escape(href)}'>{html.escape(href)}</a> ({len(rows)} rows).</p>"
        )
        worst = worst_errors(rows)
        if worst:
            parts.append(
                f"<h3>Worst errors (lowest probability given to the true class, {len(worst)} shown)</h3>"
            )
            parts.append(
                _table(
                    ["image", "group", "true", "predicted", "P(true)", "P(predicted)"],
                    [
                        [
                            r["path"],
                            "" if r["group"].startswith("image:") else r["group"],
                            r["true"],
                            r["predicted"],
                            float(r[f"p_{r['true']}"]),
                            float(r[f"p_{r['predicted']}"]),
                        ]
                        for r in worst
                    ],
                )
            )
    return "\n".join(p for p in parts if p)


def best_point(run: RunDir) -> int:
    board = read_json(Layout(run.root).leaderboard)
    return int(board["rows"][0]["point"]) if board and board.get("rows") else 0


def worst_error_heatmaps(run: RunDir, point: int, count: int) -> str:
    """The published model's worst validation errors with Grad-CAM overlays (shard images)."""
    layout = Layout(run.root)
    metrics = read_json(layout.eval_dir(point) / "metrics.json")
    if count == 0 or not metrics or not (layout.model / "meta.json").exists():
        return ""
    worst = [
        r
        for r in worst_errors(
            read_predictions(
                layout.eval_dir(point) / metrics.get("predictions", "predictions.csv")
            ),
            count,
        )
        if r.get("shard") and r.get("row")
    ]
    if not worst:
        return "<p>No validation errors.</p>"
    import h5py
    import torch

    from ..data.dataset import to_model_input
    from ..models.bundle import load_bundle, overlay_png

    bundle = load_bundle(layout.model)
    cards = []
    for r in worst:
        with h5py.File(layout.shards / r["shard"], "r") as h5:
            image = np.asarray(h5["images"][int(r["row"])])
        x = to_model_input(torch.from_numpy(image[None]), bundle.device)
        pred = bundle.classes.index(r["predicted"])
        png = overlay_png(image, bundle.heatmap(x, pred))
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        confidence = float(r["p_" + r["predicted"]])
        cards.append(
            f'<div class="card">{_img_tag(src, "heatmap")}<br>✘ {html.escape(r["path"])}: true <b>{html.escape(r["true"])}</b>, '
            f"predicted <b>{html.escape(r['predicted'])}</b> ({confidence:.2f}); heatmap of the predicted class</div>"
        )
    return '<div class="grid">' + "".join(cards) + "</div>"


def curves(metrics_file: Path) -> str:
    import matplotlib.pyplot as plt

    lines = (
        [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
        if metrics_file.exists()
        else []
    )
    train = [(m["iteration"], m["loss"]) for m in lines if "loss" in m]
    val = [(m["iteration"], m["val_accuracy"], m["val_loss"]) for m in lines if "val_accuracy" in m]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    if train:
        a.plot(*zip(*train, strict=True), label="train loss")
    if val:
        a.plot([v[0] for v in val], [v[2] for v in val], "o-", label="validation loss")
        b.plot([v[0] for v in val], [v[1] for v in val], "o-", color="green")
    a.set_xlabel("iteration")
    a.set_title("loss vs iteration")
    a.legend()
    b.set_xlabel("iteration")
    b.set_title("validation accuracy")
    b.set_ylim(0, 1)
    return _img_tag(_png(fig), "loss and accuracy curves")


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
    return _img_tag(_png(fig), "confusion matrix")


def samples(run: RunDir, count: int) -> str:
    """Validation images with prediction, confidence and a Grad-CAM overlay."""
    if count == 0 or not (run.root / "model" / "meta.json").exists():
        return "<p>No samples (no model or heatmap_samples: 0).</p>"
    from ..data.dataset import ShardDataset, to_model_input
    from ..data.roles import role_index
    from ..models.bundle import load_bundle, overlay_png

    bundle = load_bundle(run.root / "model")
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
        png = overlay_png(image.numpy(), cam)
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        ok = "✔" if pred == label else "✘"
        cards.append(
            f'<div class="card">{_img_tag(src, "heatmap")}<br>{ok} true <b>{html.escape(bundle.classes[label])}</b>, '
            f"predicted <b>{html.escape(bundle.classes[pred])}</b> ({probs[pred]:.2f})</div>"
        )
    return '<div class="grid">' + "".join(cards) + "</div>"


def _train_rates(root: Path, point: int) -> tuple[float, float] | None:
    """(images/s per rank, data-wait fraction): means over metrics.jsonl windows, the first
    left out when there are more (it holds start-up: worker launch, first batches)."""
    path = Layout(root).metrics_log(point)
    if not path.exists():
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    windows = [x for x in lines if x.get("images_per_s")]
    windows = windows[1:] if len(windows) > 1 else windows
    if not windows:
        return None
    world = (read_json(Layout(root).progress(point), {}) or {}).get("world_size") or 1
    rate = sum(x["images_per_s"] for x in windows) / len(windows) / max(int(world), 1)
    wait = sum(x.get("data_wait_fraction", 0.0) for x in windows) / len(windows)
    return rate, wait


def stage_figures(run: RunDir, manifest: dict) -> str:
    """Throughput of each stage (ingest, train, evaluate), so a reader sees which one bounds
    the run; empty when no stage recorded one."""
    rows = []
    seconds = manifest.get("ingest_seconds") if manifest else None
    if seconds:
        rate = f"{manifest['inputs'] / seconds:.1f} files/s per task"
        rows.append(["ingest", f"{seconds:.1f} s (summed over shard tasks)", rate])
    for p in range(len(run.plan["points"])):
        found = _train_rates(run.root, p)
        if found:
            kind = "CPU" if ran_on(run, p)[0].startswith("CPU") else "GPU"
            rate, wait = f"{found[0]:.1f} images/s per rank ({kind})", f"data wait {found[1]:.1%}"
            rows.append([f"train, point {p}", wait, rate])
        done = read_json(Layout(run.root).eval_dir(p) / "metrics.json", {}) or {}
        if isinstance(done.get("seconds"), int | float):
            took, count = f"{done['seconds']:.1f} s", f"{done.get('samples', '?')} samples"
            rows.append([f"evaluate, point {p}", took, count])
    if not rows:
        return ""
    note = (
        "<p class='note'>A data wait above ~10 % means the input pipeline, not the model, bounds "
        "training (more <code>train.workers</code>, node-local staging); ingest runs once per "
        "dataset and scales with shards × tasks.</p>"
    )
    return "<h2>Where the time goes</h2>" + _table(["stage", "time", "rate"], rows) + note


def ran_on(run: RunDir, point: int) -> tuple[str, str]:
    """(device, autocast) as training of ``point`` really ran, from what its ranks recorded
    about themselves, never from the spec: ``amp: true`` on a CPU runs without autocast, and a
    report that said otherwise (or "GPU" for a CPU rank) misled the reader about the numbers."""
    from ..runtime.compat import amp_dtype
    from ..stats.provenance import training_ranks

    ranks = training_ranks(Layout(run.root).train_dir(point))
    if not ranks:
        return "not recorded", "not recorded"
    kinds = sorted({str(r.get("device", "cpu")).split(":")[0] for r in ranks})
    gpus = sorted({str(r["gpu"]) for r in ranks if r.get("gpu") not in (None, "none")})
    count = f"{len(ranks)} rank{'s' if len(ranks) != 1 else ''}"
    device = f"GPU: {', '.join(gpus)} ({count})" if gpus else f"{'/'.join(kinds).upper()} ({count})"
    dtype = amp_dtype(run.point(point).train.amp, kinds[0])
    if dtype is None:
        return device, "no autocast (float32)"
    name = str(dtype).removeprefix("torch.")
    return device, f"autocast {name}" + (" with loss scaling" if name == "float16" else "")


def leak_note(manifest: dict) -> str:
    """Identical or near-duplicate images across the split, as a warning when there are any
    (so the summary counts them); a clean dataset gets one plain line."""
    leaks = manifest.get("leaks", {})
    near = (leaks.get("near_duplicates") or {}).get("pairs", 0)
    if not near and not leaks.get("identical_images_in_train_and_val"):
        return "<p>No identical or near-duplicate images across the split.</p>"
    return f"<div class='warn'>⚠ Possible leaks: {near_duplicates_note(manifest)}</div>"


WARN_DIV = re.compile(r"""<div class=(["'])warn\1>""")


def number_warnings(page: str) -> tuple[str, list[tuple[str, str]]]:
    """Give every warning box on the page an anchor; return the page and (anchor, first line
    of text) per warning, so the summary counts them all and links to each, wherever a
    section put it."""
    found: list[tuple[str, str]] = []

    def anchor(match: re.Match[str]) -> str:
        ident = f"warning-{len(found) + 1}"
        rest = page[match.end() : match.end() + 600]
        text = html.unescape(re.sub(r"<[^>]+>", " ", rest.split("</div>", 1)[0]))
        found.append((ident, " ".join(text.replace("⚠", "").split())[:160]))
        return f'<div class="warn" id="{ident}">'

    return WARN_DIV.sub(anchor, page), found


def _headline(metrics: dict, task: str) -> str:
    """The published model's figures, each with its 95 % interval."""
    names = LEADERBOARD[task]
    figures = [f"{label} <b>{_ci(metrics[k])}</b>" for k, label in names.items() if k in metrics]
    if not figures:
        return "not evaluated yet"
    where = metrics.get("data", "validation split")
    count = metrics.get("samples")
    return ", ".join(figures) + (f" on {count} images ({html.escape(str(where))})" if count else "")


def _data_line(manifest: dict, metrics: dict) -> str:
    """Images, patients and classes, as the manifest and the evaluation counted them."""
    if not manifest:
        return "no manifest yet"
    before = manifest["counts_before_augmentation"]
    train, val = sum(before["train"].values()), sum(before["val"].values())
    unit = metrics.get("bootstrap", {}).get("unit", "image")
    groups = metrics.get("groups")
    patients = (
        f"{groups} patients/groups scored"
        if groups and unit != "image"
        else "no patient ids (each image counted as its own patient)"
    )
    classes = ", ".join(html.escape(c) for c in manifest["classes"])
    return (
        f"{manifest['inputs']} files: {train} training and {val} validation images "
        f"(before augmentation), {len(manifest['skipped'])} skipped; {patients}; "
        f"{len(manifest['classes'])} classes: {classes}"
    )


def _decision(metrics: dict, spec: Any) -> str:
    """The rule the deployed model (serve, export) applies, with the operating point's own
    figures when one was fitted."""
    default = "most probable class" if spec.task == "classify" else "the detector's scored boxes"
    rule = html.escape(metrics.get("decision_rule", default))
    op = metrics.get("operating_point") or {}
    if op.get("threshold") is not None:
        rule += (
            f"; sensitivity {_ci(op['sensitivity'])}, specificity {_ci(op['specificity'])} "
            "on the images it was chosen on"
        )
    if spec.deploy.threshold:
        rule += f"; serve answers 'uncertain' below confidence {spec.deploy.threshold}"
    return rule


def summary_section(
    run: RunDir, manifest: dict, best: int, metrics: dict, warnings: list[tuple[str, str]]
) -> str:
    """The first screen: what was trained on what, how good it is (with intervals), what is
    deployed, where it ran, and how many warnings the page holds (each linked)."""
    spec = run.spec
    task = "classification" if spec.task == "classify" else "object detection"
    device, autocast = ran_on(run, best)
    if warnings:
        links = "".join(f"<li><a href='#{a}'>{html.escape(text)}</a></li>" for a, text in warnings)
        warned = f"<b>{len(warnings)}</b> on this page:<ul style='margin:.2em 0'>{links}</ul>"
    else:
        warned = "none"
    rows = [
        ("Task", f"{task}, {html.escape(spec.model.arch)} (published: point {best})"),
        ("Data", _data_line(manifest, metrics)),
        ("Headline", f"<span class='headline'>{_headline(metrics, spec.task)}</span>"),
        ("", "<span class='note'>in brackets: 95 % bootstrap intervals</span>"),
        ("Deployed rule", _decision(metrics, spec)),
        ("Trained on", f"{html.escape(device)}, {html.escape(autocast)}"),
        ("Warnings", warned),
    ]
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<div class='summary' id='summary'><h2>Summary</h2><table>{body}</table></div>"


def build_report(run: RunDir) -> str:
    import matplotlib

    matplotlib.use("Agg")
    spec = run.spec
    manifest = read_json(run.root / "manifest.json", {})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>xvhpc report: {html.escape(spec.name)}</title><style>{CSS}</style></head><body>"
    ]
    parts.append(
        f"<h1>{html.escape(spec.name)}</h1><p>site {html.escape(run.plan['site'])}, spec hash {html.escape(run.plan['spec_hash'])}</p>"
    )
    parts.append(SUMMARY_MARK)
    t = spec.train
    parts.append("<h2>Model and hyperparameters</h2>")
    parts.append(
        _table(
            ["setting", "value"],
            [
                ["arch", spec.model.arch],
                ["pretrained", spec.model.pretrained],
                ["max_iterations", t.max_iterations],
                ["batch_size", t.batch_size],
                ["learning_rate", t.learning_rate],
                ["weight_decay", t.weight_decay],
                ["momentum", t.momentum],
                ["optimizer", t.optimizer],
                ["schedule", t.schedule],
                ["amp (spec)", t.amp],
                ["amp (as run)", ran_on(run, best_point(run))[1]],
                ["image_size", spec.data.image_size],
            ],
        )
    )
    if manifest:
        parts.append("<h2>Data</h2>")
        before, after = (
            manifest["counts_before_augmentation"],
            manifest["counts_after_augmentation"],
        )
        rows = [
            [c, before["train"].get(c, 0), after["train"].get(c, 0), before["val"].get(c, 0)]
            for c in manifest["classes"]
        ]
        parts.append(
            _table(["class", "train (original)", "train (after augmentation)", "validation"], rows)
        )
        parts.append(
            f"<p>{manifest['inputs']} files found; {len(manifest['skipped'])} skipped; {manifest['leaks']['identical_images_in_train_and_val']} identical image(s) on both sides of the split.</p>"
        )
        parts.append(leak_note(manifest))
        if manifest["skipped"]:
            parts.append(
                _table(
                    ["skipped file", "reason"],
                    [[s["path"], s["reason"]] for s in manifest["skipped"][:200]],
                )
            )
    parts.append(stage_figures(run, manifest))
    board = read_json(run.root / "eval" / "leaderboard.json")
    if board and len(board["rows"]) > 1:
        parts.append(f"<h2>Sweep leaderboard (by {html.escape(board['rank_by'])})</h2>")
        parts.append(
            _table(
                ["point", "parameters", *LEADERBOARD[spec.task].values()],
                [
                    [f"{r['point']} ({r.get('state', 'done')})", params_text(r["params"])]
                    + [
                        _ci(
                            {
                                "value": r[k],
                                "ci_low": r.get("ci", {}).get(k, [None])[0],
                                "ci_high": r.get("ci", {}).get(k, [None, None])[1],
                            }
                        )
                        for k in LEADERBOARD[spec.task]
                    ]
                    for r in board["rows"]
                ],
            )
        )
        parts.append(
            "<p class='note'>Ranked by the point estimate; where intervals overlap the ranking is not "
            "evidence that one point is better. The points are chosen and measured on the same validation "
            "split, so the best point's figures are optimistic.</p>"
        )
    parts.append(sweep_section(run.root, spec, _png))  # metric vs parameters, all curves
    parts.append(crossval_section(run, manifest))
    for p, params in enumerate(run.plan["points"]):
        parts.append(f"<h2>Point {p} {html.escape(json.dumps(params)) if params else ''}</h2>")
        parts.append(curves(run.root / "train" / str(p) / "metrics.jsonl"))
        metrics = read_json(run.root / "eval" / str(p) / "metrics.json")
        if metrics and metrics.get("task") == "detect":
            parts.append(detection_section(Layout(run.root).eval_dir(p)))
        elif metrics:
            parts.append(details_section(run, p, metrics))
    best = best_point(run)
    heatmaps = ""  # Grad-CAM: classifiers only
    if spec.task == "classify":
        heatmaps = worst_error_heatmaps(run, best, spec.evaluate.heatmap_samples)
    if heatmaps:
        parts.append(
            f"<h2>Worst validation errors with heatmaps (published model, point {best})</h2>"
        )
        parts.append(heatmaps)
    if spec.task == "classify":
        parts.append("<h2>Validation samples with heatmaps (best model)</h2>")
        parts.append(samples(run, spec.evaluate.heatmap_samples))
    best_metrics = published_metrics(run, best)  # with folds: pooled, its rule fitted on them
    parts.append("<h2>Provenance</h2>")
    if best_metrics.get("provenance"):
        parts.append(provenance_table(best_metrics["provenance"]))
    parts.append(
        f"<p class='note'>Decision rule of the published model: {html.escape(best_metrics.get('decision_rule', 'most probable class'))}.</p>"
    )
    parts.append(
        "<h2>Spec</h2><pre>" + html.escape((run.root / "spec.yaml").read_text()) + "</pre>"
    )
    # lets a headless browser (and the test suite) tell that every embedded image decoded and
    # where the summary ends (it must fit the first screen)
    parts.append(
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.images=i.length;document.body.dataset.imagesLoaded="
        "i.filter(x=>x.complete&&x.naturalWidth>0).length;const s=document.getElementById("
        "'summary');if(s){document.body.dataset.summaryBottom=Math.ceil("
        "s.getBoundingClientRect().bottom+window.scrollY);}});</script></body></html>"
    )
    page, warnings = number_warnings("\n".join(parts))
    summary = summary_section(run, manifest, best, best_metrics, warnings)
    return page.replace(SUMMARY_MARK, summary, 1)


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    run = RunDir.open(args.run_dir)
    write_text_atomic(run.root / "report.html", build_report(run))
    log.info("wrote %s", run.root / "report.html")
    return 0
