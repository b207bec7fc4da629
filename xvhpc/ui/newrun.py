"""The new-run form: a data folder picked from a list (never typed), a base spec, the few
settings a point-and-click user edits, then the same validation as ``xvhpc validate`` (the spec
is written to ``RUNS_DIR/<name>.yaml`` first, so its errors name that file and line) and a
start: ``xvhpc run`` (local) or ``xvhpc submit --site S`` in a child process started from an
argument list, never a shell."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..registry import DEFAULT_TASK, task_infos
from ..rundir import Layout
from ..spec import SpecError, check_against_site, known_sites, load_site, load_spec
from ..spec.load import set_dotted
from ..spec.yamlio import load_yaml_with_lines
from ..util import open_append, write_text_atomic
from .security import NAME, Refused, child, form_value, inside

DEFAULTS = "(defaults)"
DATA_SUFFIXES = (".csv", ".json")
MAX_CHOICES = 500
HEADER = "# written by xvhpc ui"  # the first line of each spec the form writes
START_LOG = "ui-start.out"  # in the run's logs/: what the started command printed
AUGMENT = re.compile(r"\s*([A-Za-z0-9][\w.-]{0,63})\s*=\s*(\d{1,4})\s*")
INT = re.compile(r"\d{1,9}")
# form field → (spec key, kind); empty fields keep the base spec's value
SETTINGS = {
    "max_iterations": ("train.max_iterations", "int"),
    "learning_rate": ("train.learning_rate", "float"),
    "weight_decay": ("train.weight_decay", "float"),
    "validation": ("data.split.validation", "float"),
    "folds": ("data.split.folds", "int"),
    "image_size": ("data.image_size", "int"),
}


def data_choices(data_root: Path) -> list[str]:
    """Folders (two levels deep) and CSV/COCO files under the data root, as relative paths;
    links are neither listed nor entered."""
    found: list[str] = []
    level = [data_root]
    for _ in range(2):
        nxt = []
        for folder in level:
            for p in sorted(folder.iterdir()) if folder.is_dir() else []:
                if p.name.startswith(".") or p.is_symlink():
                    continue
                if p.is_dir() or p.suffix.lower() in DATA_SUFFIXES:
                    found.append(p.relative_to(data_root).as_posix())
                if p.is_dir():
                    nxt.append(p)
        level = nxt
    return found[:MAX_CHOICES]


def base_choices(data_root: Path) -> list[str]:
    """Specs offered as a starting point: the defaults, and YAML files in the data root
    (``xvhpc init`` writes one there)."""
    specs = [
        p.name
        for p in sorted(data_root.glob("*.y*ml"))
        if not p.is_symlink() and p.is_file() and NAME.fullmatch(p.name)
    ]
    return [DEFAULTS, *specs[:MAX_CHOICES]]


def site_choices() -> list[str]:
    return sorted(known_sites())


@dataclass(frozen=True)
class Request:
    """A checked form: every name from a list, every number parsed; the spec to write."""

    name: str
    site: str
    raw: dict[str, Any]


def _number(field: str, text: str, kind: str) -> int | float:
    if kind == "int":
        if not INT.fullmatch(text):
            raise Refused(f"{field}: {text[:40]!r} is not a whole number")
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise Refused(f"{field}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise Refused(f"{field}: {text[:40]!r} is not a finite number")
    return value


def _augment(text: str) -> dict[str, dict[str, Any]]:
    """``covid19=8, viral=2`` → each class's copies (flips and a rotation, training split only)."""
    out: dict[str, dict[str, Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        found = AUGMENT.fullmatch(part)
        if not found:
            raise Refused(f"augment: {part[:40]!r}: expected CLASS=COPIES, e.g. covid19=8")
        out[found.group(1)] = {"hflip": True, "rotate": [90], "copies": int(found.group(2))}
    return out


def _base(data_root: Path, base: str) -> dict[str, Any]:
    """The base spec's mapping, read as ``xvhpc validate`` reads a spec (plain YAML: no tags,
    no alias bombs, bounded size, UTF-8), its problems as file:line text."""
    if base == DEFAULTS:
        return {}
    try:
        raw, _ = load_yaml_with_lines(child(data_root, base, "base spec"))
    except SpecError as exc:
        raise Refused(str(exc)) from None
    return raw


def spec_path(runs_root: Path, name: str) -> Path:
    """``RUNS_DIR/<name>.yaml``, the spec the form writes; one it did not write (no ``HEADER``
    line: a spec someone wrote by hand) is never replaced."""
    path = runs_root / f"{name}.yaml"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise Refused(f"run name {name!r}: {path} exists and is not a spec file; choose another")
    if path.is_file():
        with path.open("rb") as fh:
            first = fh.readline(len(HEADER) + 1)
        if first.decode(errors="replace").rstrip("\n") != HEADER:
            raise Refused(f"run name {name!r}: {path} exists (a spec the form did not write); "
                          "choose another name")  # fmt: skip
    return path


def read_form(form: dict[str, str], runs_root: Path, data_root: Path) -> Request:
    """The form checked against the lists it was offered and parsed; raises ``Refused``."""
    get = lambda key, default="": form_value(form, key, default)  # noqa: E731
    name = get("name")
    run_dir = child(runs_root, name, "run name")
    if run_dir.exists() or run_dir.is_symlink():
        raise Refused(f"run name {name!r}: {run_dir} exists; choose another name")
    spec_path(runs_root, name)
    data, base, site = get("data"), get("base", DEFAULTS), get("site", "local")
    task = get("task", DEFAULT_TASK)
    for value, offered, what in (
        (data, data_choices(data_root), "data"),
        (base, base_choices(data_root), "base spec"),
        (site, site_choices(), "site"),
        (task, list(task_infos()), "task"),
    ):
        if value not in offered:
            raise Refused(f"{what} {value[:64]!r}: not one of the choices offered")
    source = (data_root / data).resolve()
    if not inside(data_root, data_root / data):
        raise Refused(f"data {data!r}: outside {data_root}")
    raw = _base(data_root, base)
    raw["name"], raw["task"] = name, task
    try:
        set_dotted(raw, "data.source", str(source))
        for field, (key, kind) in SETTINGS.items():
            if text := get(field):
                set_dotted(raw, key, _number(field, text, kind))
        if augment := _augment(get("augment")):
            set_dotted(raw, "data.augment", augment)
    except ValueError as exc:  # the base spec has a value where a section belongs
        raise Refused(f"base spec {base}: {exc}") from None
    return Request(name, site, raw)


def validate(request: Request, runs_root: Path) -> tuple[Path, str]:
    """Write ``RUNS_DIR/<name>.yaml`` and check it as ``xvhpc validate --site`` does: the spec
    file and the problems text ('' when it validates)."""
    path = spec_path(runs_root, request.name)
    text = f"{HEADER}\n{yaml.safe_dump(request.raw, sort_keys=False)}"
    write_text_atomic(path, text)
    try:
        loaded = load_spec(path)
        problems = check_against_site(loaded, load_site(request.site))
        if problems:
            raise SpecError(problems)
    except SpecError as exc:
        return path, str(exc)
    return path, ""


def start(spec: Path, run_dir: Path, site: str) -> subprocess.Popen[bytes]:
    """``xvhpc run`` (a site that runs here) or ``xvhpc submit`` as a child process: an
    argument list (no shell reads any value), its output in the run's logs/."""
    local = load_site(site).local
    verb = ["run", str(spec), "--out", str(run_dir), "--site", site]
    if not local:
        verb[0] = "submit"
    Layout(run_dir).logs.mkdir(parents=True, exist_ok=True)
    with open_append(Layout(run_dir).logs / START_LOG, binary=True) as log:
        return subprocess.Popen(
            [sys.executable, "-m", "xvhpc", *verb],
            cwd=run_dir.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the run outlives a dashboard stopped with Ctrl-C
        )


def wait_compiled(proc: subprocess.Popen[bytes], run_dir: Path, timeout: float = 30.0) -> str:
    """Wait until the started command has compiled the run (its plan is written: the run page
    can show it) or has stopped; '' then, else what it printed (a compile error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Layout(run_dir).plan.is_file():
            return ""
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    log = Layout(run_dir).logs / START_LOG
    said = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
    if proc.poll() is None:
        return f"the run has not compiled after {timeout:.0f} s; it goes on: {said}"
    return said or f"the command stopped (exit {proc.returncode}) before compiling the run"
