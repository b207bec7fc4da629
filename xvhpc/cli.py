"""The ``xvhpc`` command: one verb, one function; imports stay lazy so login-side verbs are fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _fail(message: str, code: int = 2) -> int:
    print(f"xvhpc: error: {message}", file=sys.stderr)
    return code


def _shard_arg(text: str) -> str | int:
    """``--shard``: a shard index (0, 1, …) or ``all``."""
    if text == "all":
        return text
    if not text.isdigit():  # also refuses "-1", "1.5", ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a shard index (0, 1, …) or 'all'")
    return int(text)


def _at_least(low: int, high: int | None = None):
    """An argparse type: an integer ≥ ``low`` (and ≤ ``high``), with a message that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is above {high}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _ingest_locks(args: argparse.Namespace) -> list[tuple[str, bool]] | None:
    """What this ``xvhpc ingest`` writes, as run-dir locks (see xvhpc/lock.py); None: nothing
    (an MPI rank other than 0 of ``--shard all``, whose rank 0 holds the lock for all)."""
    from .lock import launch_rank
    from .runtime.whoami import array_index

    if args.shard == "all":
        return [("ingest", False)] if launch_rank() == 0 else None
    index = args.shard if args.shard is not None else array_index(os.environ)
    parts = [("ingest", True)]
    if index is not None:
        parts.append((f"shard-{index:05d}", False))
    if args.merge:
        parts.append(("merge", False))
    return parts


def cmd_validate(args: argparse.Namespace) -> int:
    from .runtime.compat import site_torch_warning
    from .spec import SpecError, check_against_site, load_site, load_spec, site_advice

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


def cmd_sites(args: argparse.Namespace) -> int:
    from .backends.base import availability
    from .spec import SpecError, known_sites, load_site

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


def _compile(spec_path: str, site_name: str, out: str):
    from .plan import build_plan
    from .plan.render import write_plan
    from .spec import SpecError, check_against_site, load_site, load_spec, site_advice

    loaded = load_spec(spec_path)
    site = load_site(site_name)
    problems = check_against_site(loaded, site)
    if problems:
        raise SpecError(problems)
    for said in site_advice(loaded, site):
        print(f"xvhpc: warning: {said}", file=sys.stderr)
    run_dir = str(Path(out).resolve())
    plan = build_plan(loaded, site, run_dir)
    from .lock import exclusive_run

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with exclusive_run(Path(run_dir)):  # no other xvhpc process is writing or running it
        write_plan(plan, site, Path(spec_path).read_text())
    return plan, site


def cmd_compile(args: argparse.Namespace) -> int:
    from .spec import SpecError

    try:
        plan, site = _compile(args.spec, args.site, args.out)
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


def cmd_submit(args: argparse.Namespace) -> int:
    from .spec import SpecError
    from .submit import submit_plan

    try:
        plan, site = _compile(args.spec, args.site, args.out)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.test_only:
        from .submit import test_plan

        return test_plan(plan, site)
    return submit_plan(plan, site, dry_run=args.dry_run, force=args.force)


def cmd_status(args: argparse.Namespace) -> int:
    from .submit import print_status

    return print_status(Path(args.run_dir), as_json=args.json)


def cmd_cancel(args: argparse.Namespace) -> int:
    from .submit import cancel_run

    return cancel_run(Path(args.run_dir))


def cmd_logs(args: argparse.Namespace) -> int:
    from .submit import show_logs

    return show_logs(Path(args.run_dir), args.step, args.lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .lock import exclusive_run
    from .spec import SpecError
    from .submit import run_local

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_run(out):  # the steps it starts share this hold (XVHPC_LOCK_TOKEN)
        try:
            plan, site = _compile(args.spec, args.site, args.out)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            return 1
        if not site.local:
            return _fail(
                f"site {site.name!r} has a scheduler ({site.scheduler}): xvhpc run is for sites "
                f"that run here. HINT: xvhpc submit {args.spec} --site {site.name} --out {args.out}"
            )
        return run_local(plan, site)


def cmd_ingest(args: argparse.Namespace) -> int:
    from . import lock
    from .pipeline.ingest import main

    parts = _ingest_locks(args)
    if parts is None:
        return main(args)
    with lock.step(Path(args.run_dir).resolve(), parts):
        return main(args)


def cmd_stage(args: argparse.Namespace) -> int:
    from .data.stage import main

    return main(args.run_dir, args.to)


def cmd_train(args: argparse.Namespace) -> int:
    from .runtime import stopsignals

    stopsignals.hold()  # before torch loads: a run-limit signal now must not kill the rank
    from . import lock
    from .pipeline.train import main

    if lock.launch_rank() != 0:  # only rank 0 writes: the job's other ranks never lock
        return main(args)
    with lock.step(Path(args.run_dir).resolve(), [(f"train-{args.point}", False)]):
        return main(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline.evaluate import main

    return main(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .pipeline.report import main

    return main(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.main import main

    return main(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .serve.export import main

    return main(args)


def cmd_weights(args: argparse.Namespace) -> int:
    from .models.weights import main

    return main(args)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .registry import load_task

    return load_task(args.task).synth(args)


def cmd_predict(args: argparse.Namespace) -> int:
    """Batch prediction: list the inputs, compile chunks + merge for the site, submit (or run)."""
    from .plan.predict import (
        PredictError,
        build_predict_plan,
        check_array_cap,
        check_queue,
        prepare_job,
    )
    from .plan.render import write_plan
    from .spec import SpecError, load_site
    from .submit import submit_plan

    out = Path(args.out).resolve()
    try:
        site = load_site(args.site)
        job, meta = prepare_job(
            args.run_dir, args.data, out, args.chunk_size, args.batch_size, args.heatmaps
        )
        check_array_cap(job, site)
        plan = build_predict_plan(job, meta, site, out, args.walltime)
        check_queue(plan, site)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    except PredictError as exc:
        return _fail(str(exc))
    write_plan(plan, site, json.dumps(meta.get("spec") or {}, indent=2) + "\n")
    print(f"{len(job.inputs)} file(s) in {job.chunks} chunk(s) of at most {job.chunk_size}")
    code = submit_plan(plan, site, dry_run=args.dry_run, force=args.force)
    if code == 0 and site.local:
        from .registry import load_task  # its task.py only: the hooks import late
        from .rundir.records import task_of

        print(f"predictions: {out / ('predictions' + load_task(task_of(meta)).chunk_suffix)}")
    return code


def cmd_predict_chunk(args: argparse.Namespace) -> int:
    from .pipeline.predict import main

    return main(args)


class _Version(argparse.Action):
    """``--version``: the version and git commit, looked up only when asked (every other
    command builds this parser too and must not wait for git)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from . import version_text

        print(f"{parser.prog} {version_text()}")  # stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvhpc", description=__doc__)
    parser.add_argument("--version", action=_Version, help="the version and git commit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("validate", cmd_validate, "check a spec (and optionally its fit to a site)")
    p.add_argument("spec")
    p.add_argument("--site", help="also check against this site's limits")
    p = add("sites", cmd_sites, "list known site configs")
    p.add_argument("-v", "--verbose", action="store_true")
    p = add("compile", cmd_compile, "write plan.json and job scripts; submits nothing")
    p.add_argument("spec")
    p.add_argument("--site", default="local")
    p.add_argument("--out", required=True, help="run directory")
    p = add("submit", cmd_submit, "compile and submit every step in dependency order")
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
    p = add("status", cmd_status, "state of each step, with training progress")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p = add("cancel", cmd_cancel, "cancel every live job of a run")
    p.add_argument("run_dir")
    p = add("logs", cmd_logs, "show the logs of a run's steps")
    p.add_argument("run_dir")
    p.add_argument("step", nargs="?")
    p.add_argument("-n", "--lines", type=int, default=40)
    p = add("run", cmd_run, "run the whole pipeline here on the embedded local site")
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--site",
        default="local",
        help="a site that runs here (scheduler: local), e.g. one with env.container",
    )

    p = add("ingest", cmd_ingest, "(job step) images → HDF5 shards")
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--shard",
        type=_shard_arg,
        default=None,
        help="shard index, or 'all' (default: from the array task id)",
    )
    p.add_argument("--merge", action="store_true", help="write manifest.json from finished shards")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: data.workers, else the task's CPUs up to 8); with "
        "--shard all and at least as many shards, each writes whole shards",
    )
    p = add("train", cmd_train, "(job step) distributed training of one sweep point")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--point", type=int, default=0)
    p.add_argument(
        "--max-iterations",
        type=_at_least(1),
        default=None,
        help="override the spec (tests, smoke runs)",
    )
    p = add(
        "evaluate",
        cmd_evaluate,
        "(job step) metrics on the validation split or a labelled folder/CSV",
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument("--point", type=int, default=0)
    p.add_argument("--all", action="store_true", help="every sweep point, then the leaderboard")
    p.add_argument("--data", help="a labelled folder or CSV instead of the validation split")
    p = add("stage", cmd_stage, "(job step) copy the shards to node-local storage, verified")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--to", required=True, help="destination; $VARS are expanded on each node")
    p = add("report", cmd_report, "(job step) write report.html")
    p.add_argument("--run-dir", required=True)
    p = add("serve", cmd_serve, "serve the trained model over REST")
    p.add_argument("run_dir")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=_at_least(1, 65535), default=None)
    p.add_argument("--workers", type=int, default=1, help="server processes (CPU serving)")
    p.add_argument(
        "--max-batch", type=int, default=16, help="images per forward pass (1: no batching)"
    )
    p.add_argument(
        "--batch-window-ms", type=float, default=5.0, help="how long a batch waits to fill"
    )
    p = add("export", cmd_export, "export the model (TorchScript or ONNX) with a sidecar JSON")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["torchscript", "onnx", "triton"], default="torchscript")
    p.add_argument("--out", default=None)
    p = add("weights", cmd_weights, "manage the offline pretrained-weights cache")
    p.add_argument("action", choices=["fetch", "list", "path"])
    p.add_argument("arch", nargs="?")
    p = add("predict", cmd_predict, "batch prediction over a folder, CSV or COCO JSON, as jobs")
    p.add_argument("run_dir", help="a trained run directory (or a model bundle directory)")
    p.add_argument("--data", required=True, help="folder, CSV (data.csv.path_column) or COCO")
    p.add_argument("--out", required=True, help="output directory (predictions.csv, summary)")
    p.add_argument("--site", default="local")
    p.add_argument("--chunk-size", type=int, default=1000, help="files per array task")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--heatmaps", action="store_true", help="also write Grad-CAM overlay PNGs")
    p.add_argument("--walltime", default="01:00:00", help="per chunk")
    p.add_argument("--dry-run", action="store_true", help="print the submit commands only")
    p.add_argument("--force", action="store_true", help="submit even if jobs of OUT are live")
    p = add("predict-chunk", cmd_predict_chunk, "(job step) predict one chunk, or --merge")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument(
        "--per-job",
        type=int,
        default=1,
        help="chunks per array element, one per rank (whole-node sites: one per GPU)",
    )
    p.add_argument("--merge", action="store_true")
    p = add(
        "demo-data", cmd_demo_data, "generate a synthetic X-ray-like dataset (JPEG, PNG, DICOM)"
    )
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=None, help="pixels (256; --task detect: 64)")
    p.add_argument("--seed", type=int, default=0)
    from .registry import task_infos  # torch-free: each task's info.py

    p.add_argument("--task", choices=tuple(task_infos()), default="classify")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .models.safeload import UnloadableFile
    from .spec.errors import SpecError
    from .util import UserError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:  # e.g. a run directory whose spec.yaml was edited into a broken state
        print(exc, file=sys.stderr)
        return 1
    except UnloadableFile as exc:  # a corrupt or pickled checkpoint/weights file: never unpickled
        return _fail(str(exc))
    except UserError as exc:  # a busy run dir, a damaged JSON file or shard …
        return _fail(str(exc), exc.code)
    except OSError as exc:  # the machine, not the input: disk full, read-only, permission
        code = _fail(_os_error(exc))
        shards = sys.modules.get("xvhpc.data.shards")
        if shards is not None and shards.BROKEN:  # HDF5 would crash at exit on these files
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except KeyboardInterrupt:
        return 130


def _os_error(exc: OSError) -> str:
    """One line for a failed read or write, with what to do for the usual causes."""
    import errno
    import re

    filename = exc.filename
    if not filename:  # h5py puts the file in its message: "…, filename = '/x/.shard.tmp', …"
        found = re.search(r"filename = '([^']*)'", str(exc))
        filename = found.group(1) if found else None
    what = f"{filename}: " if filename else ""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    text = what + " ".join(reason.split())  # one line, whatever the library wrote
    hints = {
        errno.ENOSPC: "the filesystem is full: free space and rerun the same command (finished "
        "work is kept)",
        errno.EDQUOT: "the disk quota is exceeded: free space and rerun the same command",
        errno.EROFS: "the filesystem is read-only: write somewhere else",
        errno.EACCES: "no permission: write somewhere you may, or ask the owner",
    }
    hint = hints.get(exc.errno or -1)
    return f"{text}; {hint}" if hint else text
