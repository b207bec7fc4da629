"""An Optuna study in one journal file under RUN_DIR: no database server, no daemon.

Every array slot (``xvhpc train --point SLOT``) opens the study itself, from a compute node with
no network: Optuna's ``JournalFileBackend`` appends to ``RUN_DIR/sweep/study.journal`` under
its open(2)-based file lock, which works on the shared filesystems clusters have. A slot is bound
to at most one live trial (the trial's ``slot`` user attribute, written right after ``ask``):
a requeued or rerun slot resumes that trial, and a slot whose trial finished is skipped, so a
rerun never repeats a finished trial. Torch-free: ``xvhpc status`` reads the same study.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..registry import task_info
from ..rundir import TRAIN, TRIAL, Layout
from ..spec.schema import ExperimentSpec, RangeSpec, SweepSpec
from ..util import UserError
from .heartbeat import orphaned

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "xvhpc"
SLOT_ATTR = "slot"
FINISHED = ("COMPLETE", "PRUNED")  # a slot bound to one of these never trains again


@dataclass(frozen=True)
class Objective:
    """The validation metric the study optimises, and which way."""

    metric: str  # val_loss or a task's validation metric (measured at every val_every)
    direction: Literal["maximize", "minimize"]

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` improves on ``b`` (NaN never does)."""
        if math.isnan(a):
            return False
        return a > b if self.direction == "maximize" else a < b


def objective(spec: ExperimentSpec) -> Objective:
    """``sweep.objective``, else from ``evaluate.rank_by``: the same metric where training measures
    it (classify: accuracy; detect: map, map50), else the loss, the measured stand-in that tracks
    the others (TaskInfo.objective_for)."""
    sweep = spec.sweep
    info = task_info(spec.task)
    metric = sweep.objective if sweep is not None and sweep.objective else None
    if metric is None:
        metric = info.objective_for(spec.evaluate.rank_by)
    return Objective(metric, info.direction(metric))


def is_study(spec: ExperimentSpec) -> bool:
    return spec.sweep is not None and spec.sweep.study


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def encoded_choices(values: list[Any]) -> tuple[list[Any], bool]:
    """Optuna's categorical choices must be scalars: other values travel as JSON text."""
    if all(_scalar(v) for v in values):
        return list(values), False
    return [json.dumps(v, sort_keys=True) for v in values], True


def suggest_range(trial: optuna.Trial, key: str, values: RangeSpec) -> int | float:
    """An integer or float range through Optuna's own distributions (TPE models them)."""
    if values.integer:
        step = int(values.step or 1)
        return trial.suggest_int(key, int(values.low), int(values.high), step=step, log=values.log)
    low, high = float(values.low), float(values.high)
    return on_grid(trial.suggest_float(key, low, high, step=values.step, log=values.log), values)


def on_grid(value: float, values: RangeSpec) -> float:
    """Optuna's stepped float (0.30000000000000004) as the grid's decimal (0.3), the value a
    random sweep draws; a float without a step as it is."""
    if values.step is None or values.integer:
        return value
    return values.on_step(round((value - values.low) / values.step))


def suggest(trial: optuna.Trial, sweep: SweepSpec) -> dict[str, Any]:
    """The trial's point ``{dotted key: value}``: a range's number or one categorical per key."""
    point = {}
    for key in sorted(sweep.parameters):
        values = sweep.parameters[key]
        if isinstance(values, RangeSpec):
            point[key] = suggest_range(trial, key, values)
            continue
        choices, encoded = encoded_choices(values)
        value = trial.suggest_categorical(key, choices)
        point[key] = json.loads(value) if encoded else value
    return point


def decode_params(params: dict[str, Any], sweep: SweepSpec) -> dict[str, Any]:
    """A stored trial's parameters as spec values (JSON text decoded where it was encoded)."""
    point = {}
    for key, value in params.items():
        values = sweep.parameters.get(key, [value])
        if isinstance(values, RangeSpec):
            point[key] = on_grid(value, values)
            continue
        _, encoded = encoded_choices(values)
        point[key] = json.loads(value) if encoded and isinstance(value, str) else value
    return point


def make_sampler(sweep: SweepSpec, slot: int) -> optuna.samplers.BaseSampler:
    """TPE (constant liar: concurrent slots do not all pick the same point) or random. The seed
    differs per slot: every slot builds its own sampler, and equal seeds would draw equal points."""
    import optuna

    seed = sweep.seed * 1_000_003 + slot
    if sweep.method == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    """ASHA (successive halving from min_iterations), median, or none."""
    import optuna

    prune = sweep.prune
    if prune is None or prune.method == "none":
        return optuna.pruners.NopPruner()
    if prune.method == "median":
        return optuna.pruners.MedianPruner(n_warmup_steps=prune.min_iterations or 0)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=prune.min_iterations or "auto")


def storage(root: Path) -> optuna.storages.JournalStorage:
    """The journal file under RUN_DIR with Optuna's open(2) lock (no symlinks: some parallel
    filesystems refuse them; O_EXCL creation is atomic on NFSv3+, Lustre and GPFS)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = Layout(root).study_journal
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return JournalStorage(backend)


def open_study(root: Path, spec: ExperimentSpec, slot: int = 0) -> optuna.Study:
    """The run's study, created by whichever slot comes first."""
    import optuna

    assert spec.sweep is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage(root),
        sampler=make_sampler(spec.sweep, slot),
        pruner=make_pruner(spec.sweep),
        direction=objective(spec).direction,
        load_if_exists=True,
    )


def existing_study(root: Path) -> optuna.Study | None:
    """The study as it stands (read-only use: status, leaderboard); None before any slot ran."""
    if not Layout(root).study_journal.exists():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = Layout(root).study_journal
    bound = any((journal.parent.parent / TRAIN).glob(f"*/{TRIAL}"))
    if journal.stat().st_size == 0 and bound:  # slots ran trials the journal does not hold
        raise StudyError(
            f"{journal}: the study journal is empty, yet it is created with the study: trials "
            "already run are not recorded in it. HINT: restore it from a copy; to start a new "
            "study, move it aside (every slot then trains again)"
        )
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage(root))
    except KeyError:  # the journal exists but no slot created the study yet
        return None
    except (ValueError, UnicodeDecodeError) as exc:  # a garbage line, random bytes
        raise StudyError(
            f"{journal}: the study journal is damaged ({' '.join(str(exc).split())[:120]}). "
            "HINT: restore it from a copy; to start a new study, move it aside (every slot "
            "then trains again)"
        ) from None


class StudyError(UserError):
    """The study's journal cannot be read: one line naming it, never a traceback."""


@dataclass(frozen=True)
class Binding:
    """The trial a slot trains (or trained)."""

    trial: int  # Optuna's trial number
    params: dict[str, Any]  # {dotted key: value}
    state: str  # RUNNING, or a finished state (COMPLETE, PRUNED, FAIL)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def slot_trials(study: optuna.Study, slot: int) -> list[optuna.trial.FrozenTrial]:
    """Trials ever bound to ``slot``, oldest first."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SLOT_ATTR) == slot]


def bind_slot(study: optuna.Study, slot: int, sweep: SweepSpec) -> Binding:
    """Resume the slot's live or finished trial; otherwise ask for a new one (after a failed
    one too: a failure is a trial's result, and its params may be what made it fail)."""
    bound = slot_trials(study, slot)
    last = bound[-1] if bound else None
    if last is not None and last.state.name != "FAIL":
        return Binding(last.number, decode_params(last.params, sweep), last.state.name)
    trial = study.ask()
    params = suggest(trial, sweep)
    trial.set_user_attr(SLOT_ATTR, slot)
    return Binding(trial.number, params, "RUNNING")


def trial_id(study: optuna.Study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def report(study: optuna.Study, number: int, value: float, iteration: int) -> bool:
    """Record an intermediate value; True when the pruner says stop. A resume replays
    iterations already reported: Optuna keeps the first value (and warns; silenced here)."""
    import warnings

    import optuna

    trial = optuna.trial.Trial(study, trial_id(study, number))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trial.report(value, iteration)
    return trial.should_prune()


def tell(study: optuna.Study, number: int, state: str, value: float | None = None) -> None:
    """Finish a trial (idempotent: a trial already finished is left as it is)."""
    value_ok = value is not None and not math.isnan(value)
    if state == "COMPLETE" and not value_ok:
        state = "FAIL"  # Optuna refuses a NaN objective; a diverged run is a failed trial
    study.tell(
        number,
        values=value if state == "COMPLETE" else None,
        state=optuna_state(state),
        skip_if_finished=True,
    )


NAMES = {"COMPLETE": "done", "RUNNING": "running", "PRUNED": "pruned", "FAIL": "failed"}


def state_name(root: Path, trial: optuna.trial.FrozenTrial) -> str:
    """done / running / pruned / failed, or orphaned: RUNNING with no live task (heartbeat)."""
    if trial.state.name == "RUNNING" and orphaned(root, trial):
        return "orphaned"
    return NAMES.get(trial.state.name, trial.state.name.lower())


def fail_unbound_orphans(root: Path, study: optuna.Study) -> list[int]:
    """FAIL orphaned trials bound to no slot (a task killed between ask and bind): no slot will
    ever resume them. A slot's own orphaned trial is left RUNNING: its slot resumes it."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna_state("RUNNING"),)):
        if SLOT_ATTR not in t.user_attrs and orphaned(root, t):
            tell(study, t.number, "FAIL")
            failed.append(t.number)
    return failed


def optuna_state(name: str) -> optuna.trial.TrialState:
    import optuna

    return optuna.trial.TrialState[name]


def summary(root: Path, spec: ExperimentSpec) -> dict[str, Any] | None:
    """Trial counts by state and the best trial so far (what ``xvhpc status`` prints)."""
    study = existing_study(root)
    if study is None:
        return None
    counts = {"done": 0, "running": 0, "pruned": 0, "failed": 0, "orphaned": 0}
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        name = state_name(root, t)
        if name in counts:
            counts[name] += 1
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = None
    if complete:
        top = study.best_trial
        assert spec.sweep is not None
        best = {
            "trial": top.number,
            "slot": top.user_attrs.get(SLOT_ATTR),
            "value": top.value,
            "params": decode_params(top.params, spec.sweep),
        }
    return {
        "trials": spec.sweep.trials if spec.sweep else None,
        "objective": objective(spec).metric,
        **counts,
        "best": best,
    }


def trial_rows(root: Path, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """Every trial: number, slot, state (done/running/pruned/failed), params, value, last
    iteration reported (the leaderboard and the report's scatter plots read these)."""
    study = existing_study(root)
    if study is None or spec.sweep is None:
        return []
    return [
        {
            "trial": t.number,
            "slot": t.user_attrs.get(SLOT_ATTR),
            "state": state_name(root, t),
            "params": decode_params(t.params, spec.sweep),
            "value": t.value,
            "last_iteration": t.last_step,
        }
        for t in study.get_trials(deepcopy=False)
    ]
