"""Load and validate specs and sites; check a spec against a site; expand sweeps."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import sys
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..util import format_hms, parse_walltime
from .errors import Problem, SpecError, closest_first, did_you_mean
from .loaded import LoadedSpec
from .schema import ExperimentSpec, RangeSpec
from .site import LOCAL_SITE_YAML, SiteConfig, known_sites
from .task import check_task
from .validate import problems_from, unwrap, validate_model
from .yamlio import load_yaml_with_lines, parse_yaml_with_lines


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate an experiment spec, sweep keys and values included."""
    raw, lines = load_yaml_with_lines(path)
    spec = validate_model(ExperimentSpec, raw, str(path), lines)
    loaded = LoadedSpec(spec, raw, str(path), lines)
    problems = check_sweep(loaded) + check_task(loaded) + check_final_fit(loaded)
    problems += check_leaks(loaded) + check_folds_with_study(loaded)
    if problems:
        raise SpecError(problems)
    return loaded


def check_folds_with_study(loaded: LoadedSpec) -> list[Problem]:
    """Folds multiply points fixed at compile time; a study picks its points as it runs. Here,
    so that ``validate`` says what ``compile`` would refuse (issue 23, minor)."""
    split, sweep = loaded.spec.data.split, loaded.spec.sweep
    if split.folds and split.fold is None and sweep is not None and sweep.study:
        return [
            loaded.problem(
                "data.split.folds",
                "cross-validation needs points fixed at compile time (sweep method grid or "
                "random without trials): an Optuna study picks its points as it runs",
            )
        ]
    return []


def check_leaks(loaded: LoadedSpec) -> list[Problem]:
    """data.leaks: drop removes identical images from the validation split; with folds every
    image is held out once and trained on in the other folds, so there is none to drop from:
    refused rather than silently doing nothing (ingest still warns on each identical pair)."""
    data = loaded.spec.data
    if data.leaks == "drop" and data.split.folds:
        return [
            loaded.problem(
                "data.leaks",
                "drop does not work with cross-validation (data.split.folds): use report, and "
                "remove the identical images that ingest warns about from the data",
            )
        ]
    return []


def check_final_fit(loaded: LoadedSpec) -> list[Problem]:
    """train.final_fit retrains a cross-validated point on all folds: without folds there is
    nothing to refit on; without a select split no record is left to stop it early on."""
    spec = loaded.spec
    if spec.data.split.final:
        return [
            loaded.problem(
                "data.split.final", "is set by the plan for its final fits: use train.final_fit"
            )
        ]
    if not spec.train.final_fit:
        return []
    if not spec.data.split.folds:
        return [
            loaded.problem(
                "train.final_fit",
                "needs cross-validation (data.split.folds: N): it retrains each sweep point on "
                "all folds after the per-fold runs",
            )
        ]
    if spec.train.early_stop is not None and not spec.data.split.select:
        return [
            loaded.problem(
                "train.early_stop",
                "with train.final_fit needs data.split.select > 0: the final fit holds no "
                "fold out, so only select records can stop it",
            )
        ]
    return []


def load_site(name_or_path: str) -> SiteConfig:
    """A site by name (see ``xvhpc sites``) or by YAML path."""
    candidate = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or candidate.is_file():
        raw, lines = load_yaml_with_lines(candidate)
        return validate_model(SiteConfig, raw, str(candidate), lines)
    sites = known_sites()
    if name_or_path not in sites:
        names = sorted(sites)
        raise SpecError(
            [
                Problem(
                    "--site",
                    None,
                    "site",
                    f"unknown site {name_or_path!r}{did_you_mean(name_or_path, names)}",
                    closest_first(name_or_path, names),
                )
            ]
        )
    file = sites[name_or_path]
    if file is None:
        raw, lines = parse_yaml_with_lines(LOCAL_SITE_YAML, "<built-in local site>")
        return validate_model(SiteConfig, raw, "<built-in local site>", lines)
    raw, lines = load_yaml_with_lines(file)
    return validate_model(SiteConfig, raw, str(file), lines)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels as needed (a null level becomes one)."""
    *parents, last = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            above = ".".join(parents[: depth + 1])
            raise ValueError(f"{above} is a value, not a section")
        node = child
    node[last] = value


MAX_SWEEP_VALUES = 1000  # values of one swept key
MAX_GRID_POINTS = 10_000  # points of a grid sweep (random sweeps sample at most 10,000)


def _without_sweep(raw: dict[str, Any]) -> dict[str, Any]:
    """The spec's raw data without its sweep section (what one point is built from): copying
    the sweep's own lists for every point made compile quadratic in their length."""
    return copy.deepcopy({k: v for k, v in raw.items() if k != "sweep"})


def _grid_size(parameters: dict[str, list[Any] | RangeSpec]) -> int:
    return math.prod(len(v) for v in parameters.values() if isinstance(v, list))


def draw(rng: random.Random, values: list[Any] | RangeSpec) -> Any:
    """One random value of a swept key: a choice, or a range's uniform (log: log-uniform) value
    on its step (integer ranges: whole numbers)."""
    if isinstance(values, list):
        return rng.choice(values)
    step = values.step if values.step is not None else (1 if values.integer else None)
    if values.log:
        value = math.exp(rng.uniform(math.log(values.low), math.log(values.high)))
    elif step is not None:
        value = values.on_step(rng.randint(0, values.steps))
    else:
        value = rng.uniform(values.low, values.high)
    return round(value) if values.integer else value


def _sample_indices(rng: random.Random, total: int, count: int) -> list[int]:
    """``count`` distinct indices below ``total``, never listing all ``total``.

    ``rng.sample(range(total), k)`` draws exactly what ``rng.sample(full_grid, k)`` drew (it
    only ever indexes the population), without building the grid; past ``sys.maxsize``
    (where ``len(range)`` fails) distinct indices are drawn one by one."""
    if total <= sys.maxsize:
        return rng.sample(range(total), count)
    chosen: dict[int, None] = {}
    while len(chosen) < count:
        chosen.setdefault(rng.randrange(total), None)
    return list(chosen)


def _grid_point(keys: list[str], lists: list[list[Any]], index: int) -> dict[str, Any]:
    """The ``index``-th point of ``itertools.product(*lists)`` (the last key varies fastest)."""
    values = [None] * len(keys)
    for i in range(len(keys) - 1, -1, -1):
        index, digit = divmod(index, len(lists[i]))
        values[i] = lists[i][digit]
    return dict(zip(keys, values, strict=True))


def sweep_points(loaded: LoadedSpec) -> list[dict[str, Any]]:
    """The sweep's points as ``{dotted key: value}``; one empty point without a sweep.

    A random sweep samples grid indices (seeded, deterministic): a 10^8-point grid costs as
    much as a 4-point one."""
    sweep = loaded.spec.sweep
    if sweep is None or not sweep.parameters:
        return [{}]
    keys = sorted(sweep.parameters)
    if any(isinstance(v, RangeSpec) for v in sweep.parameters.values()):  # random: no grid
        rng = random.Random(sweep.seed)
        return [{k: draw(rng, sweep.parameters[k]) for k in keys} for _ in range(sweep.samples)]
    lists = [v for k in keys if isinstance(v := sweep.parameters[k], list)]
    total = _grid_size(sweep.parameters)
    indices: Iterable[int] = range(min(total, MAX_GRID_POINTS))  # check_sweep refuses more
    if sweep.method == "random":
        indices = _sample_indices(random.Random(sweep.seed), total, min(sweep.samples, total))
    return [_grid_point(keys, lists, i) for i in indices]


def point_spec(loaded: LoadedSpec, point: dict[str, Any]) -> ExperimentSpec:
    """The spec with one sweep point applied (and the sweep removed). A combination of values
    that does not validate together is a ``SpecError`` at the sweep's line."""
    raw = _without_sweep(loaded.raw)
    try:
        for key, value in point.items():
            set_dotted(raw, key, value)
        return ExperimentSpec.model_validate(raw)
    except ValueError as exc:  # pydantic.ValidationError is one
        if isinstance(exc, ValidationError):
            messages = [p.message for p in problems_from(exc, ExperimentSpec, loaded.file, {})]
        else:
            messages = [str(exc)]
        shown = ", ".join(f"{k}={_short(v)}" for k, v in point.items())
        raise SpecError(
            [loaded.problem("sweep.parameters", f"point {shown}: {m}") for m in messages]
        ) from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _model_types(annotation: Any) -> tuple[list[type[BaseModel]], list[Any]]:
    """(pydantic models, dict value types) an annotation admits (Optional/Union unwrapped)."""
    models, dict_values = [], []
    for candidate in unwrap(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            models.append(candidate)
        elif typing.get_origin(candidate) is dict:
            dict_values.append(typing.get_args(candidate)[-1])
    return models, dict_values


def _sweep_key_problem(key: str) -> tuple[str, tuple[str, ...]] | None:
    """Why ``key`` cannot be swept (message, choices), or None. Every level but the last must
    be a section (a model, or a mapping such as ``data.augment``); the sweep is not sweepable."""
    parts = key.split(".")
    section_names = sorted(
        f"{s}.{f}"
        for s, m in ExperimentSpec.model_fields.items()
        if s != "sweep"
        for f in getattr(m.annotation, "model_fields", {})
    )
    unknown = (
        f"not a spec key{did_you_mean(key, section_names)}",
        closest_first(key, section_names)[:8],
    )
    if len(parts) < 2 or parts[0] == "sweep" or any(not p for p in parts):
        return unknown
    current: Any = ExperimentSpec
    for depth, part in enumerate(parts):
        models, dict_values = _model_types(current)
        if models:
            fields = {(f.alias or n): f for m in models for n, f in m.model_fields.items()} | {
                n: f for m in models for n, f in m.model_fields.items()
            }
            if part not in fields:
                if depth == 0 or depth == 1:
                    return unknown
                above = ".".join(parts[:depth])
                names = sorted(fields)
                return (
                    f"{part!r} is not a key of {above}{did_you_mean(part, names)}",
                    closest_first(part, names)[:8],
                )
            current = fields[part].annotation
        elif dict_values:
            current = dict_values[0]
        else:
            above = ".".join(parts[:depth])
            return (f"{above} is a value, not a section: sweep {above} itself", ())
    if parts[0] == "data":  # ingest reads the base spec's data section once for every point
        return (
            "data.* is read once, by ingest, for every sweep point (one set of shards, one "
            "split): sweeping it would change nothing; compile one run per value instead",
            (),
        )
    return None


def _whole_numbers_only(base: dict[str, Any], key: str) -> bool:
    """Whether ``key`` is an integer field: it refuses the fractions a float range suggests (a
    study would fail every trial at its start; pydantic checks the type before any bound)."""
    raw = copy.deepcopy(base)
    set_dotted(raw, key, 0.5)
    try:
        ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        return any(e["type"] == "int_from_float" for e in exc.errors())
    return False


def check_sweep(loaded: LoadedSpec) -> list[Problem]:
    """Every sweep key names a spec key, and every value validates there; the grid is bounded."""
    sweep = loaded.spec.sweep
    if sweep is None:
        return []
    problems: list[Problem] = []
    base = _without_sweep(loaded.raw)
    for key, values in sorted(sweep.parameters.items()):
        where = f"sweep.parameters.{key}"
        why = _sweep_key_problem(key)
        if why is not None:
            problems.append(loaded.problem(where, why[0], why[1]))
            continue
        if isinstance(values, RangeSpec):
            if sweep.method == "grid":
                message = "a range needs method: random or tpe (a grid takes lists: [0.1, 0.01])"
                problems.append(loaded.problem(where, message))
                continue
            if not values.integer and _whole_numbers_only(base, key):
                message = "takes whole numbers: give integer low, high and step (a float range"
                problems.append(loaded.problem(where, f"{message} suggests fractions)"))
                continue
            values = [values.low, values.high]  # both ends must be valid values of the key
        if not values:
            problems.append(loaded.problem(where, "needs at least one value"))
            continue
        if len(values) > MAX_SWEEP_VALUES:
            problems.append(
                loaded.problem(
                    where, f"{len(values):,} values; a swept key takes at most {MAX_SWEEP_VALUES:,}"
                )
            )
            continue
        for value in values:
            raw = copy.deepcopy(base)
            set_dotted(raw, key, value)
            try:
                ExperimentSpec.model_validate(raw)
            except ValidationError as exc:
                for p in problems_from(exc, ExperimentSpec, loaded.file, loaded.lines):
                    problems.append(
                        loaded.problem(where, f"value {_short(value)}: {p.message}", p.choices)
                    )
    total = _grid_size(sweep.parameters)
    if sweep.method == "grid" and total > MAX_GRID_POINTS and not problems:
        sizes = " × ".join(
            str(len(v)) for _, v in sorted(sweep.parameters.items()) if isinstance(v, list)
        )
        problems.append(
            loaded.problem(
                "sweep.parameters",
                f"a grid of {total:,} points ({sizes}); a grid sweep may have at most "
                f"{MAX_GRID_POINTS:,}: use method: random with samples: N",
            )
        )
    return problems


def check_against_site(loaded: LoadedSpec, site: SiteConfig) -> list[Problem]:
    """Problems that only show when a spec meets a site's limits."""
    res = loaded.spec.resources
    problems: list[Problem] = []
    if site.local:
        return problems  # the local site adapts the spec to this machine (one node, its GPUs)
    if res.gpus_per_node > site.node.gpus:
        problems.append(
            loaded.problem(
                "resources.gpus_per_node",
                f"{site.name} nodes have {site.node.gpus} GPUs"
                + (f" ({site.node.gpu_model})" if site.node.gpu_model else "")
                + f"; asked for {res.gpus_per_node}",
            )
        )
    if res.nodes > site.max_nodes:
        problems.append(
            loaded.problem(
                "resources.nodes",
                f"{site.name} allows at most {site.max_nodes} nodes; asked for {res.nodes}",
            )
        )
    if res.cpus_per_task and res.cpus_per_task > site.node.cores * site.node.smt:
        problems.append(
            loaded.problem(
                "resources.cpus_per_task", f"{site.name} nodes have {site.node.cores} cores"
            )
        )
    queue_name = res.queue or site.default_queue
    if site.queues:
        if res.queue and res.queue not in site.queues:
            names = sorted(site.queues)
            problems.append(
                loaded.problem(
                    "resources.queue",
                    f"{res.queue!r} is not a queue of {site.name}{did_you_mean(res.queue, names)}",
                    closest_first(res.queue, names),
                )
            )
        elif queue_name:
            queue = site.queues[queue_name]
            limit = queue.walltime_limit(res.nodes)
            for key in ("walltime", "ingest_walltime"):
                asked = getattr(res, key)
                if parse_walltime(asked) > limit:
                    problems.append(
                        loaded.problem(
                            f"resources.{key}",
                            f"{asked} exceeds queue {queue_name!r} limit {format_hms(limit)}"
                            f" for {res.nodes} node(s)",
                        )
                    )
            if not queue.min_nodes <= res.nodes <= queue.max_nodes:
                problems.append(
                    loaded.problem(
                        "resources.nodes",
                        f"queue {queue_name!r} takes {queue.min_nodes}-{queue.max_nodes} nodes",
                    )
                )
    if loaded.spec.data.stage == "node_local" and site.node_local is None:
        problems.append(
            loaded.problem(
                "data.stage",
                f"{site.name} declares no node-local storage (site key node_local.path)",
                ("shared",),
            )
        )
    if site.account_required and not (res.account or site.default_account):
        problems.append(
            loaded.problem(
                "resources.account", f"{site.name} requires a project/account (resources.account)"
            )
        )
    return problems


def site_advice(loaded: LoadedSpec, site: SiteConfig) -> list[str]:
    """What is allowed but probably a mistake on this site: GPUs paid for and left idle, and
    old flat backend keys in the site file (file:line, the key and its new place)."""
    res, node = loaded.spec.resources, site.node
    advice = list(site.warnings)
    if site.whole_nodes and 0 < res.gpus_per_node < node.gpus:
        advice.append(
            f"{loaded.file}: resources.gpus_per_node is {res.gpus_per_node} of the "
            f"{node.gpus} GPUs of a {site.name} node: {site.name} gives (and charges) whole "
            f"nodes, so {node.gpus - res.gpus_per_node} GPU(s) per node sit idle"
        )
    return advice


def spec_hash(spec: ExperimentSpec) -> str:
    """A short stable hash of a validated spec."""
    text = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
