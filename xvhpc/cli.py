"""The ``xvhpc`` command: a table of verbs.

Each verb's module declares its flags
(``add_arguments``) and runs it (``main``), with its own lock policy; this file only lists them
and turns errors into one line. Imports stay lazy: the parser imports the module of the verb
asked for, nothing else, so login-side verbs stay fast and torch-free."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    """One verb: ``target`` is a module that defines ``add_arguments(parser)`` and ``main(args)``,
    or ``module:name`` for a module of several verbs (``name_arguments`` and ``name``)."""

    target: str
    help: str
    # stop signals held before the module (and torch) loads: a run-limit signal during start-up
    # then checkpoints at the first iteration instead of killing the rank (runtime/stopsignals)
    hold_signals: bool = False

    def parts(self) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
        module, _, name = self.target.partition(":")
        loaded = importlib.import_module(module)
        if name:
            return getattr(loaded, f"{name}_arguments"), getattr(loaded, name)
        return loaded.add_arguments, loaded.main


LOGIN = "xvhpc.submit.verbs"
# (job step): what the compiled job scripts run
VERBS = {
    "init": Verb("xvhpc.init.verb", "survey a data source; write a commented spec for it"),
    "validate": Verb(f"{LOGIN}:validate", "check a spec (and optionally its fit to a site)"),
    "sites": Verb(f"{LOGIN}:sites", "list known site configs"),
    "compile": Verb(f"{LOGIN}:compile", "write plan.json and job scripts; submits nothing"),
    "submit": Verb(f"{LOGIN}:submit", "compile and submit every step in dependency order"),
    "status": Verb(f"{LOGIN}:status", "state of each step, with training progress"),
    "cancel": Verb(f"{LOGIN}:cancel", "cancel every live job of a run"),
    "logs": Verb(f"{LOGIN}:logs", "show the logs of a run's steps"),
    "run": Verb(f"{LOGIN}:run", "run the whole pipeline here on the embedded local site"),
    "ingest": Verb("xvhpc.pipeline.ingest", "(job step) images → HDF5 shards"),
    "train": Verb(
        "xvhpc.pipeline.train",
        "(job step) distributed training of one sweep point",
        hold_signals=True,
    ),
    "evaluate": Verb(
        "xvhpc.pipeline.evaluate",
        "(job step) metrics on the validation split or a labelled folder/CSV",
    ),
    "stage": Verb("xvhpc.data.stage", "(job step) copy the shards to node-local storage, verified"),
    "report": Verb("xvhpc.pipeline.report", "(job step) write report.html"),
    "serve": Verb("xvhpc.serve.main", "serve the trained model over REST"),
    "ui": Verb("xvhpc.ui.main", "a web dashboard over run directories (token or Unix socket)"),
    "export": Verb(
        "xvhpc.serve.export", "export the model (TorchScript or ONNX) with a sidecar JSON"
    ),
    "weights": Verb("xvhpc.models.weights", "manage the offline pretrained-weights cache"),
    "predict": Verb(
        f"{LOGIN}:predict", "batch prediction over a folder, CSV or COCO JSON, as jobs"
    ),
    "predict-chunk": Verb("xvhpc.pipeline.predict", "(job step) predict one chunk, or --merge"),
    "demo-data": Verb(
        f"{LOGIN}:demo_data", "generate a synthetic X-ray-like dataset (JPEG, PNG, DICOM)"
    ),
}
DESCRIPTION = "Vision models on HPC clusters: a spec compiled into Slurm/LSF jobs (or run here)."
EVERY = "*"  # build_parser(EVERY): every verb's flags (the docs, the tests)


def _fail(message: str, code: int = 2) -> int:
    print(f"xvhpc: error: {message}", file=sys.stderr)
    return code


class _Version(argparse.Action):
    """``--version``: the version and git commit, looked up only when asked (every other
    command builds this parser too and must not wait for git)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from . import version_text

        print(f"{parser.prog} {version_text()}")  # stdout, as argparse's own version action
        parser.exit()


def build_parser(only: str | None = EVERY) -> argparse.ArgumentParser:
    """The parser; the flags of verb ``only`` (every verb's with ``EVERY``; none with None, for
    ``xvhpc --help``). Only the modules of those verbs are imported."""
    parser = argparse.ArgumentParser(prog="xvhpc", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version, help="the version and git commit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        if only in (EVERY, name):
            if verb.hold_signals and only == name:
                from .runtime import stopsignals

                stopsignals.hold()  # before its module imports torch
            add_arguments, run = verb.parts()
            add_arguments(p)
            p.set_defaults(func=run)
    return parser


def _verb_of(argv: list[str]) -> str | None:
    """The verb asked for: the first argument that is not an option (None: none given)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    from .models.safeload import UnloadableFile
    from .spec.errors import SpecError
    from .util import UserError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_verb_of(argv)).parse_args(argv)
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
