"""Node-local staging: copy the shards once per node (Summit's NVMe burst buffer, a local SSD)
and let training read them there instead of from the shared filesystem.

The job script exports ``XVHPC_STAGE_DIR`` (variables such as ``$USER`` or ``$SLURMD_NODENAME``
left unexpanded, so each node expands its own) and runs ``xvhpc stage`` with one task per node.
A copy is used only when it is complete and every file's sha256 matches the manifest; anything
else is a warning and the shared copy is read — never a half-staged or corrupt shard.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from .. import rundir
from ..util import atomic_path, sha256_file, write_json_atomic

STAGE_ENV = "XVHPC_STAGE_DIR"
READY = ".xvhpc-staged.json"

log = logging.getLogger("xvhpc.stage")


def expand(template: str) -> Path:
    """The node's own path: ``$VARS`` and ``~`` expanded here, on the node."""
    return Path(os.path.expanduser(os.path.expandvars(template)))


def _shard_entries(run_root: Path) -> list[dict]:
    manifest = json.loads(rundir.Layout(run_root).manifest.read_text())
    return list(manifest["shards"])


def stage_shards(run_root: Path, dest: Path) -> int:
    """Copy every shard of the manifest to ``dest`` (skipping verified copies); return files copied.

    Each file is copied to a temporary name, its sha256 checked against the manifest, then renamed;
    the READY marker is written last, so a killed copy is never mistaken for a complete one."""
    entries = _shard_entries(run_root)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / READY).unlink(missing_ok=True)
    copied = 0
    for entry in entries:
        source = rundir.Layout(run_root).shards / entry["file"]
        target = dest / entry["file"]
        if target.is_file() and sha256_file(target) == entry["sha256"]:
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
            if sha256_file(tmp) != entry["sha256"]:
                raise OSError(f"{source}: copy to {target} does not match the manifest's sha256")
        copied += 1
    write_json_atomic(dest / READY, {"files": {e["file"]: e["sha256"] for e in entries}})
    return copied


def shard_dir(run_root: Path) -> Path:
    """Where this process reads shards: the node-local copy when staged and complete, else shared."""
    shared = rundir.Layout(run_root).shards
    template = os.environ.get(STAGE_ENV)
    if not template:
        return shared
    local = expand(template)
    try:
        staged = json.loads((local / READY).read_text())["files"]
        wanted = {e["file"]: e["sha256"] for e in _shard_entries(run_root)}
    except (OSError, ValueError, KeyError):
        staged, wanted = None, {}
    if staged != wanted:
        log.warning("no complete node-local copy at %s; reading the shared shards", local)
        return shared
    log.info("reading shards from the node-local copy %s", local)
    return local


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc stage``'s flags."""
    p.add_argument("--run-dir", required=True)
    p.add_argument("--to", required=True, help="destination; $VARS are expanded on each node")


def main(args: argparse.Namespace) -> int:
    """``xvhpc stage``: one task per node; a failure leaves training on the shared copy."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dest = expand(args.to)
    try:
        copied = stage_shards(Path(args.run_dir).resolve(), dest)
    except (OSError, ValueError, KeyError) as exc:
        print(f"xvhpc: warning: node-local staging to {dest} failed: {exc}", flush=True)
        return 1
    print(f"xvhpc: staged shards to {dest} ({copied} copied)", flush=True)
    return 0
