"""Steps inside a container image: the prefix each runtime puts before a rank's command.

Apptainer/Singularity (``exec --nv --bind``), Charliecloud (``ch-run -b``), podman-hpc
(``run --gpu``) wrap the command each rank runs, so the launcher (srun, jsrun, mpirun) starts one
container per rank, as their documentation shows for MPI jobs. pyxis is an srun plugin: srun's
``--container-image`` flags, and a one-task srun for the steps that run no launcher. A launcher
that spawns the ranks itself (torchrun) runs inside one container instead.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from ..base import Shell

if TYPE_CHECKING:
    from ...plan.step import Plan, Step
    from ...spec import SiteConfig
    from ...spec.site import Container

RUN_DIR = Shell('"$RUN_DIR"')


def mounts(box: Container, plan: Plan) -> list[str]:
    """What every container sees at its own path: the run directory, the data and the site's."""
    return [RUN_DIR, *([plan.data_source] if plan.data_source else []), *box.binds]


def _joined(items: list[str], form: str = "{0}") -> Shell:
    """One shell word: ``form`` of each mount (``{0}`` its path), joined with commas."""
    words = [form.format(i if isinstance(i, Shell) else shlex.quote(i)) for i in items]
    return Shell(",".join(words))


def pyxis_flags(box: Container, plan: Plan) -> list[str]:
    """srun's pyxis options: image, mounts at their own paths, the run directory as workdir."""
    return [
        f"--container-image={box.image}",
        Shell("--container-mounts=" + _joined(mounts(box, plan), "{0}:{0}")),
        Shell('--container-workdir="$RUN_DIR"'),
    ]


def prefix(box: Container, step: Step, plan: Plan) -> list[str]:
    """The tokens before a rank's command (pyxis: a one-task srun, for steps without one)."""
    gpus = step.gpus_per_node > 0
    if box.runtime in ("apptainer", "singularity"):
        binds = ["--bind", _joined(mounts(box, plan))]
        return [box.runtime, "exec", *(["--nv"] if gpus else []), *binds, box.image]
    if box.runtime == "charliecloud":
        binds = [t for m in mounts(box, plan) for t in ("-b", m)]
        return ["ch-run", *binds, "--cd", RUN_DIR, box.image, "--"]
    if box.runtime == "podman-hpc":
        volumes = [t for m in mounts(box, plan) for t in ("-v", _joined([m], "{0}:{0}"))]
        head = ["podman-hpc", "run", "--rm", *(["--gpu"] if gpus else []), "--net", "host"]
        return [*head, "--ipc", "host", "--env-host", *volumes, "-w", RUN_DIR, box.image]
    return ["srun", "--nodes=1", "--ntasks=1", *pyxis_flags(box, plan)]  # pyxis


def contain(site: SiteConfig, step: Step, plan: Plan, argv: list[str]) -> list[str]:
    """``argv`` run inside the site's container (as is without one, or where pyxis's srun
    flags are added by the srun launcher itself)."""
    box = site.env.container
    if box is None or (box.runtime == "pyxis" and step.distributed):
        return argv
    return [*prefix(box, step, plan), *argv]


def with_pyxis(site: SiteConfig, plan: Plan, line: list[str]) -> list[str]:
    """An srun launch line with pyxis's container flags (srun is the only launcher pyxis has)."""
    box = site.env.container
    if box is None or box.runtime != "pyxis":
        return line
    return [line[0], *pyxis_flags(box, plan), *line[1:]]
