"""The login-side verbs (validate, sites, compile, submit, status, cancel, logs, run, predict,
demo-data): each ``X_arguments(parser)`` declares its flags and ``X(args)`` runs it. Torch-free
at import and in use: ``cli.py`` lists them in its verb table and imports this module only
when one of them is asked for."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..plan.model import Plan
    from ..spec import SiteConfig


def fail(message: str, code: int = 2) -> int:
    """``xvhpc: error: MESSAGE`` on stderr; the exit code."""
    print(f"xvhpc: error: {message}", file=sys.stderr)
    return code


def validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec")
    p.add_argument("--site", help="also check against this site's limits")


def validate(args: argparse.Namespace) -> int:
    from ..runtime.compat import site_torch_warning
    from ..spec import SpecError, check_against_site, load_site, load_spec, site_advice

    try:
        loaded = load_spec(args.spec)
        site = load_site(args.site) if args.site else None
        if site is not None:
            problems = check_against_site(loaded, site)
            if problems:
                raise SpecError(problems)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.spec}: OK" + (f" for site {args.site}" if args.site else ""))
    warning = site and site_torch_warning(site.name, site.env.torch)
    for said in ([warning] if warning else []) + (site_advice(loaded, site) if site else []):
        print(f"xvhpc: warning: {said}", file=sys.stderr)
    return 0


def sites_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true")


def sites(args: argparse.Namespace) -> int:
    from ..backends.base import availability
    from ..spec import SpecError, known_sites, load_site

    for name, file in sorted(known_sites().items()):
        try:
            site = load_site(str(file) if file else name)
        except SpecError as exc:
            print(f"{name:14s} INVALID\n{exc}")
            continue
        ok, why = availability(site.scheduler)
        node = site.node
        gpus = f"{node.gpus}x {node.gpu_model}" if node.gpus else "no GPU"
        print(
            f"{name:14s} {site.architecture:8s} {site.scheduler:5s}+{site.launcher:8s} "
            f"{node.cores} cores, {gpus}; sweeps: {site.sweep.mode}"
            + ("" if ok else f"  [here: {why}]")
        )
        if args.verbose:
            print(f"{'':14s} {site.description}  ({file or 'built in'})")
    return 0


def compile_run(spec_path: str, site_name: str, out: str) -> tuple[Plan, SiteConfig]:
    """Validate, check against the site and write the run directory (plan, scripts)."""
    from ..plan import build_plan
    from ..plan.render import write_plan
    from ..spec import SpecError, check_against_site, load_site, load_spec, site_advice

    loaded = load_spec(spec_path)
    site = load_site(site_name)
    problems = check_against_site(loaded, site)
    if problems:
        raise SpecError(problems)
    for said in site_advice(loaded, site):
        print(f"xvhpc: warning: {said}", file=sys.stderr)
    run_dir = str(Path(out).resolve())
    plan = build_plan(loaded, site, run_dir)
    from ..lock import exclusive_run

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with exclusive_run(Path(run_dir)):  # no other xvhpc process is writing or running it
        write_plan(plan, site, Path(spec_path).read_text())
    return plan, site


def compile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec")
    p.add_argument("--site", default="local")
    p.add_argument("--out", required=True, help="run directory")


def compile(args: argparse.Namespace) -> int:
    from ..spec import SpecError

    try:
        plan, site = compile_run(args.spec, args.site, args.out)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"compiled {len(plan.steps)} steps for {site.name} into {plan.run_dir}")
    for step in plan.steps:
        extra = f" array={step.array}" if step.array else ""
        extra += " packed" if step.packed else ""
        print(
            f"  {step.name:9s} nodes={step.allocation_nodes} walltime={step.walltime}{extra} after={','.join(step.after) or '-'}"
        )
    print(f"  at most {plan.node_hours()} node-hours if every job ran to its walltime")
    return 0


def submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec")
    p.add_argument("--site", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--dry-run", action="store_true", help="print the submit commands, submit nothing"
    )
    p.add_argument("--force", action="store_true", help="submit even if jobs of this run are live")
    p.add_argument(
        "--test-only",
        action="store_true",
        help="ask the scheduler to check each job script (account, partition, GRES; Slurm's "
        "sbatch --test-only); nothing is queued",
    )


def submit(args: argparse.Namespace) -> int:
    from ..spec import SpecError
    from . import submit_plan

    try:
        plan, site = compile_run(args.spec, args.site, args.out)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.test_only:
        from . import test_plan

        return test_plan(plan, site)
    return submit_plan(plan, site, dry_run=args.dry_run, force=args.force)


def status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")


def status(args: argparse.Namespace) -> int:
    from . import print_status

    return print_status(Path(args.run_dir), as_json=args.json)


def cancel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")


def cancel(args: argparse.Namespace) -> int:
    from . import cancel_run

    return cancel_run(Path(args.run_dir))


def logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("step", nargs="?")
    p.add_argument("-n", "--lines", type=int, default=40)


def logs(args: argparse.Namespace) -> int:
    from . import show_logs

    return show_logs(Path(args.run_dir), args.step, args.lines)


def run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--site",
        default="local",
        help="a site that runs here (scheduler: local), e.g. one with env.container",
    )


def run(args: argparse.Namespace) -> int:
    from ..backends.local.runner import run_local
    from ..lock import exclusive_run
    from ..spec import SpecError

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_run(out):  # the steps it starts share this hold (XVHPC_LOCK_TOKEN)
        try:
            plan, site = compile_run(args.spec, args.site, args.out)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            return 1
        if not site.local:
            return fail(
                f"site {site.name!r} has a scheduler ({site.scheduler}): xvhpc run is for sites "
                f"that run here. HINT: xvhpc submit {args.spec} --site {site.name} --out {args.out}"
            )
        return run_local(plan, site)


def demo_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=None, help="pixels (256; detect, segment: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--video",
        action="store_true",
        help="detect, segment: videos whose labelled frames are named clip.mp4#t=<seconds>",
    )
    from ..registry import DEFAULT_TASK, task_infos  # torch-free: each task's info.py

    p.add_argument("--task", choices=tuple(task_infos()), default=DEFAULT_TASK)


def demo_data(args: argparse.Namespace) -> int:
    from ..registry import load_task

    return int(load_task(args.task).synth(args))


def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a trained run directory (or a model bundle directory)")
    p.add_argument("--data", required=True, help="folder, CSV (data.csv.path_column) or COCO")
    p.add_argument("--out", required=True, help="output directory (predictions.csv, summary)")
    p.add_argument("--site", default="local")
    p.add_argument("--chunk-size", type=int, default=1000, help="files per array task")
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images per forward pass (classify; detect and segment pass one image's tiles, "
        "action 16 clips)",
    )
    p.add_argument(
        "--heatmaps", action="store_true", help="also write Grad-CAM overlay PNGs (classify)"
    )
    p.add_argument("--walltime", default="01:00:00", help="per chunk")
    p.add_argument("--dry-run", action="store_true", help="print the submit commands only")
    p.add_argument("--force", action="store_true", help="submit even if jobs of OUT are live")
    p.add_argument(
        "--format",
        choices=("labelstudio", "coco"),
        help="also write pre-annotations for review: OUT/labelstudio.json (Label Studio task "
        "import) or OUT/coco.json (COCO, which CVAT imports)",
    )
    p.add_argument(
        "--order",
        choices=("input", "uncertainty"),
        default="input",
        help="of the review file: uncertainty puts the least confident first (active learning)",
    )


def predict(args: argparse.Namespace) -> int:
    """Batch prediction: list the inputs, compile chunks + merge for the site, submit (or run)."""
    from ..plan.predict import (
        PredictError,
        build_predict_plan,
        check_array_cap,
        check_queue,
        prepare_job,
        review_flags,
    )
    from ..plan.render import write_plan
    from ..spec import SpecError, load_site
    from . import submit_plan

    out = Path(args.out).resolve()
    try:
        site = load_site(args.site)
        job, meta = prepare_job(
            args.run_dir, args.data, out, args.chunk_size, args.batch_size, args.heatmaps
        )
        check_array_cap(job, site)
        review = review_flags(meta, args.format, args.order)
        plan = build_predict_plan(job, meta, site, out, args.walltime, review)
        check_queue(plan, site)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    except PredictError as exc:
        return fail(str(exc))
    write_plan(plan, site, json.dumps(meta.get("spec") or {}, indent=2) + "\n")
    print(f"{len(job.inputs)} file(s) in {job.chunks} chunk(s) of at most {job.chunk_size}")
    code = submit_plan(plan, site, dry_run=args.dry_run, force=args.force)
    if code == 0 and site.local:
        from ..plan.predict import predictions_file  # the task's TaskInfo: no task.py import

        print(f"predictions: {predictions_file(out, meta)}")
        if args.format:
            from ..rundir.records import PredictLayout

            print(f"for review: {PredictLayout(out).review(args.format)}")
    return code
