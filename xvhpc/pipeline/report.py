"""``xvhpc report``: one self-contained report.html (plots and images embedded)."""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluation import best_point, published_metrics
from ..registry import load_task, task_info
from ..report.html import ci, img_tag, png, table
from ..rundir import Layout
from ..rundir.run import RunDir
from ..sweeps.board import params_text
from ..sweeps.board import report_section as sweep_section
from ..util import read_json, write_text_atomic
from .common import setup_logging

if TYPE_CHECKING:
    from ..tasks.base import Task

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{width:230px;font-size:13px}pre{background:#f7f7f7;padding:1em;overflow:auto}
.warn{background:#fff3cd;border:1px solid #e0b100;padding:.5em 1em;margin:.5em 0}.note{color:#555;font-size:13px}
.summary{border:2px solid #4a6fa5;border-radius:6px;padding:.6em 1.2em;margin:1em 0;background:#f6f9fd}
.summary table{border:none}.summary td{border:none;padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.summary td:first-child{font-weight:600;white-space:nowrap}.headline{font-size:1.15em}"""
SUMMARY_MARK = "<!-- xvhpc: summary -->"


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
    return table(["provenance", "value"], rows)


def curves(metrics_file: Path, selection: str = "val_accuracy") -> str:
    """Training loss and validation loss against iterations, beside the validation metric
    that chose the checkpoint (``selection``, the task's; ``val_accuracy`` where the log has
    none of it: a run dir from before detection logged ``val_map50`` under its own name)."""
    import matplotlib.pyplot as plt

    lines = (
        [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
        if metrics_file.exists()
        else []
    )
    if not any(selection in m for m in lines):
        selection = "val_accuracy"
    name = selection.removeprefix("val_")
    train = [(m["iteration"], m["loss"]) for m in lines if "loss" in m]
    val = [(m["iteration"], m[selection], m["val_loss"]) for m in lines if selection in m]
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
    b.set_title(f"validation {name}")
    b.set_ylim(0, 1)
    return img_tag(png(fig), f"loss and {name} curves")


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
        done = read_json(Layout(run.root).eval_metrics(p), {}) or {}
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
    return "<h2>Where the time goes</h2>" + table(["stage", "time", "rate"], rows) + note


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


def near_duplicates_note(manifest: dict) -> str:
    """The report's line on near-duplicate images across held-out parts (perceptual hash)."""
    near = manifest.get("leaks", {}).get("near_duplicates")
    if not near:
        return ""
    text = (
        f"<p>{near['pairs']} pair(s) of near-duplicate images across splits/folds "
        f"({html.escape(near['method'])}, ≤ {near['max_distance']} of 64 bits apart): the same "
        "image, or one barely changed, on both sides would let a model be scored on what it saw."
        "</p>"
    )
    rows = [[e["a"], e["part_a"], e["b"], e["part_b"], e["distance"]] for e in near["examples"]]
    return text + (
        table(["image", "part", "near-duplicate", "part", "bits"], rows[:20]) if rows else ""
    )


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


def _headline(metrics: dict, names: dict[str, str]) -> str:
    """The published model's figures (``names``: the task's, key → label), each with its
    95 % interval."""
    figures = [f"{label} <b>{ci(metrics[k])}</b>" for k, label in names.items() if k in metrics]
    if not figures:
        return "not evaluated yet"
    where = metrics.get("data", "validation split")
    count = metrics.get("samples")
    if not isinstance(count, int):  # detection's "samples" lists its drawn images
        count = metrics.get("images")
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
    default = load_task(spec.task).default_decision
    rule = html.escape(metrics.get("decision_rule", default))
    op = metrics.get("operating_point") or {}
    if op.get("threshold") is not None:
        rule += (
            f"; sensitivity {ci(op['sensitivity'])}, specificity {ci(op['specificity'])} "
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
    task = task_info(spec.task).title
    device, autocast = ran_on(run, best)
    if warnings:
        links = "".join(f"<li><a href='#{a}'>{html.escape(text)}</a></li>" for a, text in warnings)
        warned = f"<b>{len(warnings)}</b> on this page:<ul style='margin:.2em 0'>{links}</ul>"
    else:
        warned = "none"
    rows = [
        ("Task", f"{task}, {html.escape(spec.model.arch)} (published: point {best})"),
        ("Data", _data_line(manifest, metrics)),
        (
            "Headline",
            f"<span class='headline'>{_headline(metrics, load_task(spec.task).figures)}</span>",
        ),
        ("", "<span class='note'>in brackets: 95 % bootstrap intervals</span>"),
        ("Deployed rule", _decision(metrics, spec)),
        ("Trained on", f"{html.escape(device)}, {html.escape(autocast)}"),
        ("Warnings", warned),
    ]
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<div class='summary' id='summary'><h2>Summary</h2><table>{body}</table></div>"


def settings_section(run: RunDir) -> str:
    """The model and its training hyperparameters, with the autocast as it really ran."""
    spec = run.spec
    t = spec.train
    rows = [
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
    ]
    return "<h2>Model and hyperparameters</h2>\n" + table(["setting", "value"], rows)


def data_section(manifest: dict) -> str:
    """Images per class before and after augmentation, skipped files and leaks ("" before
    ingest wrote a manifest)."""
    if not manifest:
        return ""
    before, after = manifest["counts_before_augmentation"], manifest["counts_after_augmentation"]
    rows = [
        [c, before["train"].get(c, 0), after["train"].get(c, 0), before["val"].get(c, 0)]
        for c in manifest["classes"]
    ]
    parts = [
        "<h2>Data</h2>",
        table(["class", "train (original)", "train (after augmentation)", "validation"], rows),
        f"<p>{manifest['inputs']} files found; {len(manifest['skipped'])} skipped; {manifest['leaks']['identical_images_in_train_and_val']} identical image(s) on both sides of the split.</p>",
        leak_note(manifest),
    ]
    if manifest["skipped"]:
        skipped = [[s["path"], s["reason"]] for s in manifest["skipped"][:200]]
        parts.append(table(["skipped file", "reason"], skipped))
    return "\n".join(parts)


def leaderboard_section(run: RunDir, figures: dict[str, str]) -> str:
    """The sweep's points ranked, each figure (``figures``: the task's) with its interval ("" for
    a single point)."""
    board = read_json(Layout(run.root).leaderboard)
    if not (board and len(board["rows"]) > 1):
        return ""

    def cell(r: dict, k: str) -> str:
        bounds = r.get("ci", {})
        low, high = bounds.get(k, [None])[0], bounds.get(k, [None, None])[1]
        return ci({"value": r[k], "ci_low": low, "ci_high": high})

    rows = [
        [f"{r['point']} ({r.get('state', 'done')})", params_text(r["params"])]
        + [cell(r, k) for k in figures]
        for r in board["rows"]
    ]
    return "\n".join(
        [
            f"<h2>Sweep leaderboard (by {html.escape(board['rank_by'])})</h2>",
            table(["point", "parameters", *figures.values()], rows),
            "<p class='note'>Ranked by the point estimate; where intervals overlap the ranking is not "
            "evidence that one point is better. The points are chosen and measured on the same validation "
            "split, so the best point's figures are optimistic.</p>",
        ]
    )


def point_sections(run: RunDir, task: Task) -> str:
    """Per point: its training curves and the task's section of its evaluation."""
    selection = task_info(run.spec.task).selection
    parts = []
    for p, params in enumerate(run.plan["points"]):
        parts.append(f"<h2>Point {p} {html.escape(json.dumps(params)) if params else ''}</h2>")
        parts.append(curves(Layout(run.root).metrics_log(p), selection))
        metrics = read_json(Layout(run.root).eval_metrics(p))
        if metrics:
            parts.append(task.report_point(run, p, metrics))
    return "\n".join(parts)


# lets a headless browser (and the test suite) tell that every embedded image decoded and
# where the summary ends (it must fit the first screen)
LOADED_SCRIPT = (
    "<script>window.addEventListener('load',()=>{const i=[...document.images];"
    "document.body.dataset.images=i.length;document.body.dataset.imagesLoaded="
    "i.filter(x=>x.complete&&x.naturalWidth>0).length;const s=document.getElementById("
    "'summary');if(s){document.body.dataset.summaryBottom=Math.ceil("
    "s.getBoundingClientRect().bottom+window.scrollY);}});</script></body></html>"
)


def build_report(run: RunDir) -> str:
    """The whole page; the task supplies its per-point, cross-validation and extra sections."""
    import matplotlib

    matplotlib.use("Agg")
    spec = run.spec
    task = load_task(spec.task)
    manifest = read_json(Layout(run.root).manifest, {})
    best = best_point(run)
    best_metrics = published_metrics(run, best)  # with folds: pooled, its rule fitted on them
    rule = best_metrics.get("decision_rule", task.default_decision)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>xvhpc report: {html.escape(spec.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(spec.name)}</h1><p>site {html.escape(run.plan['site'])}, spec hash {html.escape(run.plan['spec_hash'])}</p>",
        SUMMARY_MARK,
        settings_section(run),
        data_section(manifest),
        stage_figures(run, manifest),
        leaderboard_section(run, task.figures),
        sweep_section(run.root, spec, png),  # metric vs parameters, all curves
        task.crossval_section(run, manifest),
        point_sections(run, task),
        task.report_extras(run, best),
        "<h2>Provenance</h2>",
        provenance_table(best_metrics["provenance"]) if best_metrics.get("provenance") else "",
        f"<p class='note'>Decision rule of the published model: {html.escape(rule)}.</p>",
        "<h2>Spec</h2><pre>" + html.escape(Layout(run.root).spec.read_text()) + "</pre>",
        LOADED_SCRIPT,
    ]
    page, warnings = number_warnings("\n".join(p for p in parts if p))
    summary = summary_section(run, manifest, best, best_metrics, warnings)
    return page.replace(SUMMARY_MARK, summary, 1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc report``'s flags."""
    p.add_argument("--run-dir", required=True)


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    run = RunDir.open(args.run_dir)
    write_text_atomic(Layout(run.root).report, build_report(run))
    log.info("wrote %s", Layout(run.root).report)
    return 0
