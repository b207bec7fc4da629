"""``xvhpc init DATA --out spec.yaml``: survey a data folder, CSV or COCO file and write a
commented spec that validates at once (login side: no torch; PIL and pydicom read headers)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..util import atomic_path, format_hms, parse_walltime

DEFAULT_WALLTIME = "02:00:00"  # asked of a cluster site, within its default queue's limit


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..registry import task_infos  # torch-free: each task's info.py

    p.add_argument("data", help="a folder of class folders, a CSV or a COCO .json")
    p.add_argument("--out", required=True, help="the spec file to write")
    p.add_argument("--task", choices=tuple(task_infos()), help="default: guessed from the data")
    p.add_argument("--site", help="fill resources for this site and print the node-hours")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--name", help="the spec's name (default: from the data's name)")
    p.add_argument("--image-size", type=int, help="pixels (default: from the resolutions)")
    p.add_argument("--max-iterations", type=int, help="default: about 30 epochs")
    p.add_argument("--arch", help="the model (default: the task's first)")
    p.add_argument(
        "--pretrained", help="the task's pretrained weights or none (default: its first)"
    )
    for what in ("path", "label", "group"):
        p.add_argument(f"--{what}-column", help=f"the CSV's {what} column (default: guessed)")


def _name(source: Path, asked: str | None) -> str:
    if asked:
        return asked
    stem = source.stem if source.is_file() else source.name
    if stem in ("metadata", "annotations", "labels", "data", "train"):
        stem = source.parent.name or stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "experiment"


def _resources(c: Any, site_name: str) -> Any:
    """The site's node shape in ``resources`` (whole GPUs of one node; walltime within the
    default queue); the loaded site."""
    from ..spec import load_site

    site = load_site(site_name)
    if site.local:
        return site
    node = site.node
    c.set("resources.nodes", 1, f"one {site.name} node; more nodes for more data")
    if node.gpus:
        c.set("resources.gpus_per_node", node.gpus, f"every GPU of a {site.name} node ({node.gpu_model or 'GPU'})")  # fmt: skip
    walltime = parse_walltime(DEFAULT_WALLTIME)
    queue = site.queues.get(site.default_queue or "") if site.queues else None
    if queue is not None:
        walltime = min(walltime, queue.walltime_limit(1))
    c.set("resources.walltime", format_hms(walltime),
          f"within queue {site.default_queue!r}'s limit" if queue else "a first guess")  # fmt: skip
    return site


def _estimate(spec_path: Path, site: Any) -> list[str]:
    """The plan's node-hours on ``site`` and what ``validate --site`` would say."""
    from ..plan import build_plan
    from ..spec import SpecError, check_against_site, load_spec, site_advice

    loaded = load_spec(spec_path)
    lines = [f"xvhpc: warning: {p}" for p in check_against_site(loaded, site)]
    lines += [f"xvhpc: warning: {a}" for a in site_advice(loaded, site)]
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            plan = build_plan(loaded, site, run_dir)
    except SpecError as exc:
        return [*lines, str(exc)]
    steps = ", ".join(f"{s.name} {s.walltime}" for s in plan.steps)
    return [*lines, f"on {site.name}: {len(plan.steps)} jobs ({steps}); at most "
            f"{plan.node_hours()} node-hours if every job ran to its walltime"]  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from ..spec import SpecError
    from .compose import choose, validated
    from .survey import InitError, summary, survey

    out = Path(args.out)
    if (out.exists() or out.is_symlink()) and not args.force:
        print(f"xvhpc: error: {out} exists: give --force to overwrite it", file=sys.stderr)
        return 2
    source = Path(os.path.abspath(args.data))
    columns = {"path": args.path_column, "label": args.label_column, "group": args.group_column}
    try:
        found = survey(source, args.task, columns, max_pixels=200_000_000)
        print("\n".join(summary(found)))
        c = choose(found, args, _name(source, args.name))
        site = _resources(c, args.site) if args.site else None
        header = [f"written by xvhpc init {source}: each choice says why; edit freely",
                  f"check it: xvhpc validate {out}" + (f" --site {args.site}" if args.site else "")]  # fmt: skip
        text = validated(c, header, out.parent if out.parent.is_dir() else Path.cwd())
    except InitError as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    except SpecError as exc:  # a broken --site file
        print(exc, file=sys.stderr)
        return 1
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    for dropped in c.dropped:
        print(f"  {dropped}")
    print(f"wrote {out} (validates: xvhpc validate {out})")
    if site is not None and not site.local:
        print("\n".join(_estimate(out, site)))
    return 0
