"""The ``xvhpc`` command: one verb, one function; imports stay lazy so login-side verbs are fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fail(message: str, code: int = 2) -> int:
    print(f"xvhpc: error: {message}", file=sys.stderr)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    from .runtime.compat import site_torch_warning
    from .spec import SpecError, check_against_site, load_site, load_spec

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
    if warning:
        print(f"xvhpc: warning: {warning}", file=sys.stderr)
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    from .schedulers import availability
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
    from .spec import SpecError, check_against_site, load_site, load_spec

    loaded = load_spec(spec_path)
    site = load_site(site_name)
    problems = check_against_site(loaded, site)
    if problems:
        raise SpecError(problems)
    run_dir = str(Path(out).resolve())
    plan = build_plan(loaded, site, run_dir)
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
    from .spec import SpecError
    from .submit import run_local

    try:
        plan, site = _compile(args.spec, "local", args.out)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    return run_local(plan, site)


def cmd_ingest(args: argparse.Namespace) -> int:
    from .steps.ingest import main

    return main(args)


def cmd_train(args: argparse.Namespace) -> int:
    from .steps.train import main

    return main(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .steps.evaluate import main

    return main(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .steps.report import main

    return main(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.app import main

    return main(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .serve.export import main

    return main(args)


def cmd_weights(args: argparse.Namespace) -> int:
    from .models.weights import main

    return main(args)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .data.synth import main

    return main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvhpc", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__import__('xvhpc').__version__}"
    )
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

    p = add("ingest", cmd_ingest, "(job step) images → HDF5 shards")
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--shard", default=None, help="shard index, or 'all' (default: from the array task id)"
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
        "--max-iterations", type=int, default=None, help="override the spec (tests, smoke runs)"
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
    p = add("report", cmd_report, "(job step) write report.html")
    p.add_argument("--run-dir", required=True)
    p = add("serve", cmd_serve, "serve the trained model over REST")
    p.add_argument("run_dir")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p = add("export", cmd_export, "export the model (TorchScript or ONNX) with a sidecar JSON")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--out", default=None)
    p = add("weights", cmd_weights, "manage the offline pretrained-weights cache")
    p.add_argument("action", choices=["fetch", "list", "path"])
    p.add_argument("arch", nargs="?")
    p = add(
        "demo-data", cmd_demo_data, "generate a synthetic X-ray-like dataset (JPEG, PNG, DICOM)"
    )
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .models.safeload import UnloadableFile
    from .spec.errors import SpecError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:  # e.g. a run directory whose spec.yaml was edited into a broken state
        print(exc, file=sys.stderr)
        return 1
    except UnloadableFile as exc:  # a corrupt or pickled checkpoint/weights file: never unpickled
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
