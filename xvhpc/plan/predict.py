"""``xvhpc predict`` on the login side: list the inputs, freeze them in ``OUT/predict.json``, and
build a Plan (an array over chunks of the input list, then a merge) that the usual renderer and
submitter turn into job scripts. Torch-free: a login node answers in well under a second.

    OUT/
      predict.json                    the frozen job: model dir, inputs, chunk size, batch size
      plan.json  scripts/  logs/  jobs.json  spec.yaml  site.json   as for any compiled run
      chunks/chunk-<i>-<key>.csv      one per finished chunk (atomic; <key>: the job's)
      predictions.csv  summary.json   written by the merge step
      heatmaps/                       with --heatmaps
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from ..backends.base import get_scheduler
from ..data.catalog import outside, read_csv_text
from ..data.frames import fragment_problem, frame_order, frame_ref
from ..registry import task_info, task_infos
from ..rundir import BundleFiles
from ..rundir.records import PredictError, PredictJob, PredictLayout, model_dir, task_of
from ..spec import SiteConfig
from ..util import file_kind, format_hms, read_json, safe_label, write_json_atomic
from .model import Plan, Step


def _problem(path: Path) -> str | None:
    """Why ``path`` (links resolved) is not a regular file to read, or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file not found" if not path.is_symlink() else "unreadable: broken link"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None if stat.S_ISREG(info.st_mode) else "not a regular file"


def _from_folder(root: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Every file below ``root`` (hidden ones aside, as ingest); FIFOs, devices and broken
    links are listed as skipped with the reason, never opened."""
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            why = _problem(path)
            if why:
                skipped.append({"path": rel, "reason": why})
            else:
                found.append({"path": str(path), "rel": rel})
    return found, skipped


def _listed(file: Path, root: Path, follow_links: bool) -> str | None:
    """Why a file a manifest lists is not read: outside the manifest's folder (``../``, an
    absolute path, a link out; unless data.follow_links), or not a regular file."""
    return outside(file, root, follow_links) or _problem(file)


def _target(base: Path, rel: str) -> tuple[Path, str]:
    """The file a listed name reads (a named video frame, ``clip.mp4#t=1.5``: its video) and
    the name its row carries (a frame's as ingest names it)."""
    ref = frame_ref(rel)
    return (base / ref.video, ref.name) if ref else (base / rel, rel)


def _from_csv(
    path: Path, column: str, follow_links: bool
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    try:
        return _read_csv(path, column, follow_links)
    except csv.Error as exc:  # a field over the csv module's 128 KiB limit, a NUL byte
        raise PredictError(f"{path}: not a usable CSV: {exc}") from None


def _read_csv(
    path: Path, column: str, follow_links: bool
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(read_csv_text(path), newline=""))
    if column not in (reader.fieldnames or []):
        raise PredictError(
            f"{path}: column {column!r} not found (columns: {', '.join(reader.fieldnames or [])})"
        )
    found, skipped = [], []
    for line, row in enumerate(reader, start=2):
        listed = (row.get(column) or "").strip()
        file, rel = _target(path.parent, listed)
        problem = fragment_problem(path.parent, listed)
        why = (problem or _listed(file, path.parent, follow_links)) if rel else "no path"
        if why is None:
            found.append({"path": str(file.resolve()), "rel": rel})
        else:
            skipped.append({"path": rel or f"<line {line}>", "reason": f"{why} (CSV line {line})"})
    return found, skipped


def _from_coco(
    path: Path, image_dir: str, follow_links: bool
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    try:
        images = json.loads(path.read_bytes())["images"]
        entries = [(im["id"], str(im["file_name"])) for im in images]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:  # [[[[… nested deeper than the parser's stack
        raise PredictError(f"{path}: JSON nested too deeply to be COCO") from None
    except (KeyError, TypeError) as exc:
        raise PredictError(f"{path}: not COCO JSON (an image list entry lacks {exc})") from None
    base = path.parent / image_dir
    found, skipped = [], []
    for image_id, listed in entries:
        file, rel = _target(base, listed)
        why = fragment_problem(base, listed) or _listed(file, base, follow_links)
        if why is None:
            found.append({"path": str(file.resolve()), "rel": rel})
        else:
            skipped.append({"path": rel, "reason": f"{why} (COCO image id {image_id})"})
    return found, skipped


def list_inputs(
    source: str | Path, data: dict[str, Any]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(inputs, skipped) of a folder (every file below it), a CSV (``data.csv.path_column``) or a
    COCO JSON (``data.coco.image_dir``); labels are not needed. Sorted by the name shown."""
    source = Path(source).resolve()
    if not source.exists():
        raise PredictError(f"--data {source} does not exist")
    if not source.is_dir() and (why := _problem(source)):  # a FIFO would block the read
        raise PredictError(f"--data {source}: {why} ({file_kind(source.stat().st_mode)})")
    kind = {".csv": "csv", ".json": "coco"}.get(source.suffix.lower(), "folders")
    if data.get("format", "auto") not in ("auto", None):
        kind = data["format"]
    follow = bool(data.get("follow_links", False))
    if kind == "csv":
        column = (data.get("csv") or {}).get("path_column", "path")
        found, skipped = _from_csv(source, column, follow)
    elif kind == "coco":
        image_dir = (data.get("coco") or {}).get("image_dir", "images")
        found, skipped = _from_coco(source, image_dir, follow)
    elif source.is_dir():
        found, skipped = _from_folder(source)
    else:
        raise PredictError(f"--data {source} is neither a folder, a .csv nor a COCO .json")
    found.sort(key=lambda s: frame_order(s["rel"]))  # a video's named frames in time order
    if not found:
        raise PredictError(f"--data {source}: no input files found")
    return found, skipped


def prepare_job(
    run_dir: str | Path,
    source: str | Path,
    out: Path,
    chunk_size: int = 1000,
    batch_size: int = 32,
    heatmaps: bool = False,
) -> tuple[PredictJob, dict[str, Any]]:
    """List the inputs and write ``OUT/predict.json``; chunks of an earlier, different job
    in OUT are removed (their rows would not be this job's)."""
    if chunk_size < 1 or batch_size < 1:
        raise PredictError("--chunk-size and --batch-size must be at least 1")
    bundle = model_dir(run_dir)
    meta = json.loads(BundleFiles(bundle).meta.read_text())
    check_heatmaps(meta, heatmaps)
    data = (meta.get("spec") or {}).get("data") or {}
    inputs, skipped = list_inputs(source, data)
    job = PredictJob(
        str(bundle),
        str(Path(source).resolve()),
        inputs,
        skipped,
        chunk_size,
        batch_size,
        heatmaps,
    )
    key = job.key()
    files = PredictLayout(out)
    earlier = read_json(files.config) or {}
    if earlier.get("key") != key:
        for stale in (files.chunks, files.heatmaps):
            shutil.rmtree(stale, ignore_errors=True)
        suffixes = dict.fromkeys(info.predictions_suffix for info in task_infos().values())
        for stale_file in (*(files.predictions(s) for s in suffixes), files.summary):
            stale_file.unlink(missing_ok=True)
    write_json_atomic(files.config, {**job.__dict__, "key": key})
    return job, meta


def check_heatmaps(meta: dict[str, Any], heatmaps: bool) -> None:
    """``PredictError`` for ``--heatmaps`` with a model whose task draws none (its torch-free
    ``TaskInfo.outputs`` say), rather than a job that quietly writes none."""
    info = task_info(task_of(meta))
    if heatmaps and "heatmap" not in info.outputs:
        raise PredictError(
            f"--heatmaps: a model of task {info.name} draws no heatmaps (its outputs: "
            f"{', '.join(info.outputs)}); Grad-CAM heatmaps are for classifiers"
        )


def review_flags(meta: dict[str, Any], fmt: str | None, order: str) -> tuple[str, ...]:
    """The merge step's ``--format``/``--order`` flags; ``PredictError`` when the model's task
    writes no such review file (its torch-free ``TaskInfo.review_formats`` say)."""
    if fmt is None:
        return ()
    info = task_info(task_of(meta))
    if fmt not in info.review_formats:
        raise PredictError(
            f"--format {fmt}: a model of task {info.name} writes no review files of that format "
            f"(its formats: {', '.join(info.review_formats) or 'none: its predictions file only'})"
        )
    return ("--format", fmt, "--order", order)


def predictions_file(out: Path, meta: dict[str, Any]) -> Path:
    """OUT/predictions<suffix> of a model with ``meta``: the suffix is its task's, read from the
    torch-free ``TaskInfo`` (the login side never imports a task's hooks)."""
    return PredictLayout(out).predictions(task_info(task_of(meta)).predictions_suffix)


def chunks_per_element(site: SiteConfig) -> int:
    """Chunks one array element predicts: one per GPU of a node where a job holds whole nodes
    (Summit: 6, one rank each; issue 22 N6), else one."""
    whole = get_scheduler(site.scheduler).whole_nodes and not site.local
    return site.node.gpus if whole and site.node.gpus else 1


def check_array_cap(job: PredictJob, site: SiteConfig) -> None:
    """One array element per chunk: more chunks than the site's array size would be rejected by
    the scheduler (Slurm MaxArraySize, LSF MAX_JOB_ARRAY_SIZE, default 1000)."""
    cap = site.sweep.max_array_size * chunks_per_element(site)
    if not site.local and job.chunks > cap:
        raise PredictError(
            f"{len(job.inputs)} inputs in chunks of {job.chunk_size} make {job.chunks} chunks, "
            f"but {site.name} allows {cap} ({site.sweep.max_array_size} array elements "
            f"(site key sweep.max_array_size) of {chunks_per_element(site)}). HINT: "
            f"--chunk-size {math.ceil(len(job.inputs) / cap)} or more"
        )


def check_queue(plan: Plan, site: SiteConfig) -> None:
    """The predict jobs within the queue's limits: walltime for their size (Summit's bins) and
    the per-user queued-job cap (array elements counted), as compile checks a pipeline."""
    queue = site.queues.get(plan.queue) if plan.queue else None
    if queue is None or site.local:
        return
    for s, limit in plan.over_walltime(queue):
        raise PredictError(
            f"job {s.name!r} asks {format_hms(s.job_seconds)} on {s.allocation_nodes} "
            f"node(s), but queue {plan.queue!r} allows {format_hms(limit)}. HINT: a "
            "shorter --walltime with a smaller --chunk-size"
        )
    jobs = plan.queued_jobs
    if queue.max_queued_jobs and jobs > queue.max_queued_jobs:
        raise PredictError(
            f"{jobs} jobs (array elements counted), but queue {plan.queue!r} takes at most "
            f"{queue.max_queued_jobs} per user. HINT: a larger --chunk-size"
        )


def build_predict_plan(
    job: PredictJob, meta: dict[str, Any], site: SiteConfig, out: Path, walltime: str,
    review: tuple[str, ...] = (),
) -> Plan:  # fmt: skip
    """predict (array over chunks, one GPU per task where the site has them) → merge (with
    ``review``: its ``--format``/``--order`` flags, the review files for labelling)."""
    spec = meta.get("spec") or {}
    resources = spec.get("resources") or {}
    name = f"{spec.get('name', 'model')}-predict"
    gpus = 1 if site.node.gpus else 0
    cpus = min(8, max(1, site.node.cores // max(site.node.gpus, 1)))
    per_job = chunks_per_element(site)
    plan = Plan(
        name=name,
        job_label=safe_label(name, 32),
        site=site.name,
        spec_file=str(BundleFiles(Path(job.model)).meta),
        spec_hash=job.key(),
        run_dir=str(out),
        points=[],
        queue=resources.get("queue") or site.default_queue,
        account=resources.get("account") or site.default_account,
        data_source=job.source,
    )
    if per_job > 1:
        elements = math.ceil(job.chunks / per_job)
        plan.steps.append(
            Step(
                "predict",
                ("predict-chunk", "--chunk", "{index}", "--per-job", str(per_job)),
                walltime,
                array=elements if elements > 1 else 0,
                max_concurrent=site.sweep.max_eligible_jobs,
                tasks_per_node=per_job,
                gpus_per_node=per_job,
                cpus_per_task=max(1, site.node.cores // per_job),
                distributed=True,  # one rank per GPU, each its own chunk (no process group)
            )
        )
    else:
        plan.steps.append(
            Step(
                "predict",
                ("predict-chunk", "--chunk", "{index}"),
                walltime,
                array=job.chunks,
                gpus_per_node=gpus,
                cpus_per_task=site.node.cores if site.local else cpus,
            )
        )
    merge = ("predict-chunk", "--merge", *review)
    plan.steps.append(Step("merge", merge, "00:15:00", after=("predict",)))
    return plan
