"""``xvhpc report``: one self-contained report.html (plots and images embedded)."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from ..util import read_json, write_text_atomic
from .common import RunDir, setup_logging

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{width:230px;font-size:13px}pre{background:#f7f7f7;padding:1em;overflow:auto}"""


def _png(fig) -> str:
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


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


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
                int(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    return _img_tag(_png(fig), "confusion matrix")


def samples(run: RunDir, count: int) -> str:
    """Validation images with prediction, confidence and a Grad-CAM overlay."""
    if count == 0 or not (run.root / "model" / "meta.json").exists():
        return "<p>No samples (no model or heatmap_samples: 0).</p>"
    from ..data.dataset import ShardDataset, load_index, to_model_input
    from ..models.bundle import load_bundle, overlay_png

    bundle = load_bundle(run.root / "model")
    dataset = ShardDataset(load_index(run.root, "val"))
    picks = (
        np.linspace(0, len(dataset) - 1, num=min(count, len(dataset)), dtype=int)
        if len(dataset)
        else []
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
                ["amp", t.amp],
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
        if manifest["skipped"]:
            parts.append(
                _table(
                    ["skipped file", "reason"],
                    [[s["path"], s["reason"]] for s in manifest["skipped"][:200]],
                )
            )
    board = read_json(run.root / "eval" / "leaderboard.json")
    if board and len(board["rows"]) > 1:
        parts.append(f"<h2>Sweep leaderboard (by {html.escape(board['rank_by'])})</h2>")
        parts.append(
            _table(
                ["point", "parameters", "accuracy", "balanced accuracy", "macro F1", "ROC-AUC"],
                [
                    [
                        r["point"],
                        json.dumps(r["params"]),
                        r["accuracy"],
                        r["balanced_accuracy"],
                        r["macro_f1"],
                        r["roc_auc"],
                    ]
                    for r in board["rows"]
                ],
            )
        )
    for p, params in enumerate(run.plan["points"]):
        parts.append(f"<h2>Point {p} {html.escape(json.dumps(params)) if params else ''}</h2>")
        parts.append(curves(run.root / "train" / str(p) / "metrics.jsonl"))
        metrics = read_json(run.root / "eval" / str(p) / "metrics.json")
        if metrics:
            parts.append(
                f"<p>accuracy <b>{metrics['accuracy']:.3f}</b>, balanced accuracy {metrics['balanced_accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f} on {metrics['samples']} validation images</p>"
            )
            parts.append(confusion(metrics))
            parts.append(
                _table(
                    ["class", "precision", "recall", "F1", "support", "ROC-AUC"],
                    [
                        [c, v["precision"], v["recall"], v["f1"], v["support"], v["roc_auc"]]
                        for c, v in metrics["per_class"].items()
                    ],
                )
            )
    parts.append("<h2>Validation samples with heatmaps (best model)</h2>")
    parts.append(samples(run, spec.evaluate.heatmap_samples))
    parts.append(
        "<h2>Spec</h2><pre>" + html.escape((run.root / "spec.yaml").read_text()) + "</pre>"
    )
    # lets a headless browser (and the test suite) tell that every embedded image decoded
    parts.append(
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.images=i.length;document.body.dataset.imagesLoaded="
        "i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script></body></html>"
    )
    return "\n".join(parts)


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    run = RunDir.open(args.run_dir)
    write_text_atomic(run.root / "report.html", build_report(run))
    log.info("wrote %s", run.root / "report.html")
    return 0
