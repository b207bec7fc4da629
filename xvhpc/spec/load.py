"""Load and validate specs and sites; check a spec against a site; expand sweeps."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util import format_hms, parse_walltime
from .errors import Problem, SpecError, closest_first, did_you_mean
from .schema import ExperimentSpec
from .site import LOCAL_SITE_YAML, SiteConfig, known_sites
from .validate import problems_from, validate_model
from .yamlio import LineMap, line_for, load_yaml_with_lines, parse_yaml_with_lines


@dataclass
class LoadedSpec:
    """A validated spec with where it came from."""

    spec: ExperimentSpec
    raw: dict[str, Any]
    file: str
    lines: LineMap

    def problem(self, key: str, message: str, choices: tuple[str, ...] = ()) -> Problem:
        return Problem(self.file, line_for(self.lines, key), key, message, choices)


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate an experiment spec, sweep keys and values included."""
    raw, lines = load_yaml_with_lines(path)
    spec = validate_model(ExperimentSpec, raw, str(path), lines)
    loaded = LoadedSpec(spec, raw, str(path), lines)
    problems = check_sweep(loaded)
    if problems:
        raise SpecError(problems)
    return loaded


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
    """Set ``a.b.c`` in nested dicts, creating levels as needed."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def sweep_points(loaded: LoadedSpec) -> list[dict[str, Any]]:
    """The sweep's points as ``{dotted key: value}``; one empty point without a sweep."""
    sweep = loaded.spec.sweep
    if sweep is None or not sweep.parameters:
        return [{}]
    keys = sorted(sweep.parameters)
    grid = [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(sweep.parameters[k] for k in keys))
    ]
    if sweep.method == "random":
        rng = random.Random(sweep.seed)
        grid = rng.sample(grid, min(sweep.samples, len(grid)))
    return grid


def point_spec(loaded: LoadedSpec, point: dict[str, Any]) -> ExperimentSpec:
    """The spec with one sweep point applied (and the sweep removed)."""
    raw = copy.deepcopy(loaded.raw)
    raw.pop("sweep", None)
    for key, value in point.items():
        set_dotted(raw, key, value)
    return ExperimentSpec.model_validate(raw)


def check_sweep(loaded: LoadedSpec) -> list[Problem]:
    """Every sweep key names a spec key, and every value validates there."""
    sweep = loaded.spec.sweep
    if sweep is None:
        return []
    problems: list[Problem] = []
    for key, values in sorted(sweep.parameters.items()):
        where = f"sweep.parameters.{key}"
        section, _, field = key.partition(".")
        model = ExperimentSpec.model_fields.get(section)
        sub = getattr(model.annotation, "model_fields", None) if model else None
        if not field or sub is None or field.split(".")[0] not in sub:
            names = sorted(
                f"{s}.{f}"
                for s, m in ExperimentSpec.model_fields.items()
                for f in getattr(m.annotation, "model_fields", {})
            )
            problems.append(
                loaded.problem(
                    where,
                    f"not a spec key{did_you_mean(key, names)}",
                    closest_first(key, names)[:8],
                )
            )
            continue
        if not values:
            problems.append(loaded.problem(where, "needs at least one value"))
        for value in values:
            raw = copy.deepcopy(loaded.raw)
            raw.pop("sweep", None)
            set_dotted(raw, key, value)
            try:
                ExperimentSpec.model_validate(raw)
            except Exception as exc:  # pydantic.ValidationError
                for p in problems_from(exc, ExperimentSpec, loaded.file, loaded.lines):  # type: ignore[arg-type]
                    problems.append(
                        loaded.problem(where, f"value {value!r}: {p.message}", p.choices)
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
    if site.account_required and not (res.account or site.default_account):
        problems.append(
            loaded.problem(
                "resources.account", f"{site.name} requires a project/account (resources.account)"
            )
        )
    return problems


def spec_hash(spec: ExperimentSpec) -> str:
    """A short stable hash of a validated spec."""
    text = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
