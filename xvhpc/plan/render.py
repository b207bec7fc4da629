"""Plan → job scripts. Pure and deterministic: same plan and site, same bytes."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

from .. import __version__, ports, rundir
from ..backends.base import REQUEUE_EXIT, Shell, get_launcher, get_scheduler, render_tokens
from ..backends.container.runtimes import contain, with_pyxis
from ..rundir import REQUEUE_MARKER_ENV, requeue_counter_shell, requeue_marker_shell
from ..spec import SiteConfig
from ..util import write_json_atomic, write_text_atomic
from .model import Plan, Step

INDEX = Shell('"$XVHPC_INDEX"')

_RUN_WITH_SIGNALS = r"""xvhpc_run() {  # run "$@" in the background; forward walltime/preemption signals to it
  "$@" &
  local pid=$! rc=0
  trap 'kill -s USR1 "$pid" 2>/dev/null || true' USR1 USR2
  trap 'xvhpc_term=1; kill -s TERM "$pid" 2>/dev/null || true' TERM
  [ "${xvhpc_late:-0}" -eq 0 ] || kill -s USR1 "$pid" 2>/dev/null || true  # it came before
  while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  trap - USR1 USR2 TERM
  return "$rc"
}"""


# A single allocation runs several stages under one walltime (issue 22 N12): between and after
# the requeue-able stages a walltime signal must not kill the batch shell (default action of
# USR1), and the requeue-able stage is stopped (checkpoint, requeue) at the end of its own share,
# SECONDS after the job started, so that evaluate and report keep theirs.
_BETWEEN_STAGES = r"""xvhpc_between() {  # outside training: note a walltime signal (training then stops at once)
  trap 'xvhpc_late=1; echo "xvhpc: walltime warning outside training; finishing this stage" >&2' USR1 USR2
  [ -z "${xvhpc_timer:-}" ] || kill "$xvhpc_timer" 2>/dev/null || true
}
xvhpc_deadline() {  # USR1 to this script $1 seconds after it started: the stage checkpoints
  local left=$(( $1 - SECONDS ))
  [ "$left" -gt 0 ] || left=1
  ( trap 'kill "$s" 2>/dev/null; exit 0' TERM; sleep "$left" & s=$!; wait "$s" && kill -s USR1 $$ ) &
  xvhpc_timer=$!
}
xvhpc_between"""


def step_argv(step: Step, plan: Plan) -> list[str]:
    """The per-rank command: python -m xvhpc STEP --run-dir "$RUN_DIR" ... ."""
    args = [INDEX if a == "{index}" else a for a in step.args]
    return [
        Shell('"$XVHPC_PY"'),
        "-m",
        "xvhpc",
        args[0],
        "--run-dir",
        Shell('"$RUN_DIR"'),
        *args[1:],
    ]


_PACKED_POOL = (
    r"""xvhpc_start() {  # start point $point on slot $1 (its own rendezvous port) in the background
  XVHPC_INDEX=$point
  export MASTER_PORT=$((base_port + 1 + $1))
  rm -f "$RUN_DIR/TRAIN/requeue-${point}"
  xvhpc_point &
  slot_of[$!]=$1
  point_of[$!]=$point
  point=$((point + 1))
}
xvhpc_pool() {  # points [$1, $2) on $3 slots: a freed slot starts the next point at once
  local first=$1 last=$2 width=$3 point=$1 slot pid p q rc requeue=0 fail=0 stop=0
  local base_port=${MASTER_PORT:-BASE_PORT}
  local -A slot_of=() point_of=()
  trap 'stop=1; for q in "${!slot_of[@]}"; do kill -s USR1 "$q" 2>/dev/null || true; done' USR1 USR2
  trap 'stop=1; xvhpc_term=1; for q in "${!slot_of[@]}"; do kill -s TERM "$q" 2>/dev/null || true; done' TERM
  for ((slot = 0; slot < width && point < last; slot++)); do xvhpc_start "$slot"; done
  if [ "${xvhpc_late:-0}" -eq 1 ]; then kill -s USR1 "${!slot_of[@]}" 2>/dev/null || true; stop=1; fi
  while [ "${#slot_of[@]}" -gt 0 ]; do
    wait -n || true  # any point ended, or a signal came
    for pid in "${!slot_of[@]}"; do
      kill -0 "$pid" 2>/dev/null && continue
      wait "$pid" && rc=0 || rc=$?
      slot=${slot_of[$pid]}
      p=${point_of[$pid]}
      unset "slot_of[$pid]" "point_of[$pid]"
      if [ -e "$RUN_DIR/TRAIN/requeue-${p}" ] || [ "$rc" -eq REQUEUE_EXIT ]; then
        rm -f "$RUN_DIR/TRAIN/requeue-${p}"
        requeue=1
      elif [ "$rc" -ne 0 ]; then
        echo "xvhpc: point ${p} failed (exit ${rc}); the other points go on" >&2
        fail=1
      fi
      if [ "$stop" -eq 0 ] && [ "$point" -lt "$last" ]; then xvhpc_start "$slot"; fi
    done
  done
  trap - USR1 USR2 TERM
  if [ "$requeue" -eq 1 ] || [ "$point" -lt "$last" ]; then return REQUEUE_EXIT; fi
  [ "$fail" -eq 0 ] || return 1
  return 0
}""".replace("REQUEUE_EXIT", str(REQUEUE_EXIT))
    .replace("TRAIN", rundir.TRAIN)
    .replace("BASE_PORT", str(ports.BASE))
)


def _requeue_block(
    site: SiteConfig,
    plan: Plan,
    run: str,
    index_var: str = "XVHPC_INDEX",
    then: tuple[str, ...] = (),
    packed: bool = False,
) -> list[str]:
    """Run ``run`` into ``$rc``; when it checkpointed (rank 0's marker, or exit 75) on a
    walltime warning (USR1/USR2) requeue the job, at most ``train.max_requeues`` times,
    counting in point ``$index_var``'s counter; on SIGTERM (a cancel, or the scheduler's own
    requeue or preemption) never. The marker decides, not the exit code: srun
    --kill-on-bad-exit turns 75 into 137 (issue 22 N4); a packed pool reads each point's marker
    itself."""
    scheduler = get_scheduler(site.scheduler)
    spec_max = plan.max_requeues
    marker = requeue_marker_shell(index_var)
    return [
        "rc=0",
        *([f"rm -f {marker}"] if not packed else []),
        f"{run} || rc=$?",
        *(
            [f"if [ -e {marker} ]; then rc={REQUEUE_EXIT}; rm -f {marker}; fi"]
            if not packed
            else []
        ),
        # SIGTERM is a cancel (scancel, bkill), or the scheduler requeueing or preempting the
        # job itself: checkpointed, never requeued from here (a cancel must end the job)
        f'if [ "$rc" -eq {REQUEUE_EXIT} ] && [ "${{xvhpc_term:-0}}" -eq 1 ]; then',
        '  echo "xvhpc: checkpoint written on SIGTERM (cancelled, or requeued/preempted by the '
        'scheduler): not requeued by this script" >&2',
        f'elif [ "$rc" -eq {REQUEUE_EXIT} ]; then  # checkpointed on a walltime warning signal',
        f"  count_file={requeue_counter_shell(index_var)}",
        '  count=$(cat "$count_file" 2>/dev/null || echo 0)',
        f'  if [ "$count" -lt {spec_max} ]; then',
        '    echo $((count + 1)) > "$count_file"',
        *(f"    {line}" for line in then),
        f'    echo "xvhpc: checkpoint written; requeue $((count + 1))/{spec_max}"',
        f"    {scheduler.requeue_command()}",
        "  else",
        f'    echo "xvhpc: checkpoint written; requeue limit {spec_max} reached (train.max_requeues)" >&2',
        "  fi",
        "fi",
    ]


def _command(step: Step, site: SiteConfig, plan: Plan) -> str:
    """The launch line: the site's launcher for distributed steps, its one-process form else;
    inside the site's container where it has one (around the launcher that spawns its ranks)."""
    launcher = get_launcher(site.launcher)
    argv = step_argv(step, plan)
    if not step.distributed:
        return render_tokens(launcher.single_command(step, site, contain(site, step, plan, argv)))
    if launcher.spawns_ranks:
        return render_tokens(contain(site, step, plan, launcher.command(step, site, argv)))
    line = launcher.command(step, site, contain(site, step, plan, argv))
    return render_tokens(with_pyxis(site, plan, line))


def _packed(step: Step, site: SiteConfig, plan: Plan) -> list[str]:
    """Sweep points from a pool of concurrent launcher steps; leaves the outcome in ``$rc``."""
    per_job = step.per_wave * step.waves
    run = f'xvhpc_pool "$first" "$last" {step.per_wave}'
    lines = [
        f"# {step.array} sweep points packed: {step.per_wave} at a time on {step.nodes} node(s)"
        f" each, {per_job} per job, {step.pack_jobs} job(s)",
        f"xvhpc_point() {{ exec {_command(step, site, plan)}; }}",
        _PACKED_POOL,
        f"first=$(( ${{XVHPC_INDEX:-0}} * {per_job} ))",
        f"last=$(( first + {per_job} < {step.array} ? first + {per_job} : {step.array} ))",
    ]
    if not step.requeue:
        return [*lines, "rc=0", f"{run} || rc=$?"]
    share = (  # every point of this job shows the count in `xvhpc status`
        "for ((i = first + 1; i < last; i++)); do "
        f"cp -f {requeue_counter_shell('first')} {requeue_counter_shell('i')}; done",
    )
    return [*lines, *_requeue_block(site, plan, run, "first", share, packed=True)]


def _plain(step: Step, site: SiteConfig, plan: Plan, native_arrays: bool) -> list[str]:
    """One launch, a loop over indices the scheduler does not array, or a requeue block;
    leaves the outcome in ``$rc`` where a requeue is possible."""
    command = _command(step, site, plan)
    if step.packed and step.array:
        return _packed(step, site, plan)
    if step.array and not (native_arrays and step.scheduler_array):
        head = [f"for XVHPC_INDEX in $(seq 0 {step.array - 1}); do"]
        if not step.requeue:
            return [*head, f"  {command}", "done"]
        block = _requeue_block(site, plan, f"xvhpc_run {command}")
        return [
            "failed_points=0",
            *head,
            *(f"  {line}" for line in block),
            f'  [ "$rc" -ne {REQUEUE_EXIT} ] || break  # requeued: the rest run after it',
            '  [ "$rc" -eq 0 ] || { failed_points=$rc; echo "xvhpc: point $XVHPC_INDEX failed (exit $rc); the other points go on" >&2; }',
            "done",
            f'[ "$rc" -eq {REQUEUE_EXIT} ] || rc=$failed_points',
        ]
    if step.requeue:
        return _requeue_block(site, plan, f"xvhpc_run {command}")
    return [command]


def _stage(step: Step, site: SiteConfig, plan: Plan) -> list[str]:
    """Copy the shards once per node; on failure train reads the shared copy (with a warning)."""
    argv = [
        Shell('"$XVHPC_PY"'),
        "-m",
        "xvhpc",
        "stage",
        "--run-dir",
        Shell('"$RUN_DIR"'),
        "--to",
        Shell('"$XVHPC_STAGE_DIR"'),
    ]
    argv = contain(site, step, plan, argv)
    every = replace(step, nodes=step.allocation_nodes)  # packed points: every node they use (N7)
    command = render_tokens(get_launcher(site.launcher).per_node_command(every, site, argv))
    return [
        f"export XVHPC_STAGE_DIR={shlex.quote(plan.stage_dir or '')}  # expanded on each node",
        f"if ! {command}; then",
        '  echo "xvhpc: warning: node-local staging failed; training reads the shared shards" >&2',
        "  unset XVHPC_STAGE_DIR",
        "fi",
    ]


def body(step: Step, plan: Plan, site: SiteConfig) -> list[str]:
    """What the job runs once its prologue has set XVHPC_INDEX and the master address."""
    native = get_scheduler(site.scheduler).native_arrays
    steps = step.stages or (step,)
    requeue = any(s.requeue for s in steps)
    lines = [f"export {REQUEUE_MARKER_ENV}=1", _RUN_WITH_SIGNALS] if requeue else []
    shared = bool(step.stages) and requeue  # one walltime, several stages
    if step.stages:
        lines.append(f"# single allocation: {' -> '.join(s.name for s in steps)}")
    if shared:
        lines.append(_BETWEEN_STAGES)
    ends = 0
    for s, following in zip(steps, [*steps[1:], None], strict=True):
        ends += s.job_seconds
        if step.stages:
            lines += [f"# -- {s.name}", "XVHPC_INDEX=0"]
        if s.stage_data and plan.stage_dir:
            lines += _stage(s, site, plan)
        deadline = shared and s.requeue and following is not None
        if deadline:  # its share ends here: the stages after it keep theirs (N12)
            lines.append(f"xvhpc_deadline {ends}")
        lines += _plain(s, site, plan, native and not step.stages)
        if deadline:
            lines.append("xvhpc_between")
        if following is not None and following.after_ended:  # score the points that finished
            lines += [
                f'[ "$rc" -ne {REQUEUE_EXIT} ] || exit "$rc"',
                f'[ "$rc" -eq 0 ] || {{ failed=$rc; echo "xvhpc: {s.name} failed in part (exit $rc);'
                f' {following.name} goes on with what finished" >&2; }}',
            ]
        elif s.requeue or (s.packed and s.array):
            lines.append('[ "$rc" -eq 0 ] || exit "$rc"')
    if any(s.after_ended for s in steps[1:]):
        lines.append('exit "${failed:-0}"')
    return lines


def render_step(step: Step, plan: Plan, site: SiteConfig) -> str:
    """One job script."""
    scheduler = get_scheduler(site.scheduler)
    env = site.env
    lines = ["#!/bin/bash", *scheduler.directives(step, plan, site)]
    lines += [
        f"# xvhpc {__version__}: step {step.name!r} of {json.dumps(plan.name)} on site {site.name!r}",
        "# generated by `xvhpc compile`; edit the spec or site config, not this file",
        "set -euo pipefail",
        f"RUN_DIR={shlex.quote(plan.run_dir)}",
        'cd "$RUN_DIR"',
    ]
    setup = ["module load " + " ".join(shlex.quote(m) for m in env.modules)] if env.modules else []
    setup += env.setup  # the site admin's own shell lines, verbatim
    if setup:  # Lmod and `conda activate` read unset variables (conda#8186)
        lines += ["set +u", *setup, "set -u"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.variables.items())]
    if "python" in env.model_fields_set:  # the site's environment wins over the submitter's (N14)
        lines.append(f"XVHPC_PY={shlex.quote(env.python)}")
    else:  # the Python that submitted (xvhpc submit exports it), else the site's default
        lines.append(f'XVHPC_PY="${{XVHPC_PYTHON:-{env.python}}}"')
    if "{index}" in step.args:
        lines.append("XVHPC_INDEX=0")
    lines += scheduler.prologue(step, site)
    lines += body(step, plan, site)
    return "\n".join(lines) + "\n"


def submit_script(plan: Plan, site: SiteConfig) -> str:
    """A hand-runnable script that submits every step in dependency order."""
    scheduler = get_scheduler(site.scheduler)
    lines = [
        "#!/bin/bash",
        f"# Submit {json.dumps(plan.name)} to {site.name} by hand (what `xvhpc submit` does, without its bookkeeping)",
        "set -euo pipefail",
        f"cd {shlex.quote(plan.run_dir)}",
    ]
    for step in plan.steps:
        var = f"job_{step.name}"
        script = f"{rundir.SCRIPTS}/{step.name}{scheduler.suffix}"
        after = [f"job_{a}" for a in step.after]
        lines += scheduler.submit_shell(var, script, after, step.after_ended)
        if not scheduler.runs_here:
            lines.append(f'echo "{step.name}: ${{{var}}}"')
    return "\n".join(lines) + "\n"


def render_plan(plan: Plan, site: SiteConfig) -> dict[str, str]:
    """Every file of a compiled run, by path relative to the run directory."""
    scheduler = get_scheduler(site.scheduler)
    files = {
        f"{rundir.SCRIPTS}/{s.name}{scheduler.suffix}": render_step(s, plan, site)
        for s in plan.steps
    }
    files[f"{rundir.SCRIPTS}/submit.sh"] = submit_script(plan, site)
    files[rundir.PLAN] = json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n"
    return files


def write_plan(plan: Plan, site: SiteConfig, spec_text: str) -> list[Path]:
    """Write the rendered files (atomically) plus a copy of the spec into the run directory."""
    root = Path(plan.run_dir)
    layout = rundir.Layout(root)
    layout.logs.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, text in render_plan(plan, site).items():
        mode = 0o755 if rel.startswith(rundir.SCRIPTS + "/") else None
        write_text_atomic(root / rel, text, mode)
        written.append(root / rel)
    write_text_atomic(layout.spec, spec_text)
    write_json_atomic(layout.site, site.model_dump(mode="json"))
    return written
