"""Hostile specs (issue 11, case 3): YAML bombs, binaries, duplicate keys, sizes, FIFOs, bad values and
sweeps that would explode are each one clear problem at file:line, never a hang or a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import xv
from tests.hostile import (
    no_traceback,
    problem_at,
)
from xvhpc.spec import SpecError, load_spec, sweep_points
from xvhpc.spec.load import point_spec
from xvhpc.spec.schema import DataSpec

BASE = "name: x\ndata:\n  source: d\n"


LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{','.join(['*' + p] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(LAUGHS + "\n")
    assert len(spec.read_bytes()) < 400
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "alias" in str(info.value) and f"{spec}:" in str(info.value)


@pytest.mark.timeout(10)
def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "rec.yaml"
    spec.write_text(BASE + "train: &t\n  seed: [*t]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "recursive" in problem_at(info.value, spec, "train.seed.0")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "binary file"),
        (BASE.encode() + b"  resize: squ\xe4sh\n", "not UTF-8"),
        (BASE.encode() + b"  resize: \x01\n", "not valid YAML"),
    ],
    ids=["binary", "latin1", "control-char"],
)
def test_binary_or_non_utf8_spec_is_a_clear_error(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert fragment in str(info.value) and f"{spec}:" in str(info.value)


@pytest.mark.timeout(10)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "train:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "first given at line 5" in problem_at(info.value, spec, "train.seed")
    assert info.value.problems[0].line == 6


@pytest.mark.timeout(10)
def test_oversized_spec_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "# " + "x" * 200_000 + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "at most 64 KiB" in str(info.value)


@pytest.mark.timeout(10)
def test_spec_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as info:
        load_spec(fifo)
    assert "not a regular file" in str(info.value)


@pytest.mark.timeout(10)
def test_collection_with_a_python_tag_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "train: !!python/object/apply:os.system ['touch x']\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "is not allowed" in problem_at(info.value, spec, "train")


@pytest.mark.timeout(10)
def test_channels_2_is_a_problem_with_choices_not_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "  channels: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    problem = next(p for p in info.value.problems if p.key == "data.channels")
    assert problem.line == 4 and set(problem.choices) == {"1", "3"}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "key,fragment",
    [
        ("train.learning_rate.x", "train.learning_rate is a value, not a section"),
        ("data.source.deeper.still", "data.source is a value, not a section"),
        ("data.csv.labl_column", "did you mean label_column"),
        ("sweep.seed", "not a spec key"),
    ],
)
def test_sweep_over_a_key_below_a_scalar_is_a_problem(
    tmp_path: Path, key: str, fragment: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + f"sweep:\n  parameters:\n    {key}: [1, 2]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert fragment in problem_at(info.value, spec, f"sweep.parameters.{key}")


def _wide_sweep(method: str, per_key: int, keys: int) -> str:
    names = [
        "seed",
        "log_every",
        "val_every",
        "checkpoint_every",
        "step_size",
        "warmup_iterations",
        "max_requeues",
        "batch_size",
    ][:keys]
    values = ", ".join(str(i) for i in range(1, per_key + 1))
    listed = "".join(f"    train.{n}: [{values}]\n" for n in names)
    return BASE + f"sweep:\n  method: {method}\n  samples: 6\n  seed: 5\n  parameters:\n{listed}"


@pytest.mark.timeout(10)
def test_random_sweep_over_a_huge_grid_samples_without_enumerating(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(_wide_sweep("random", 10, 8))  # 10^8 points
    loaded = load_spec(spec)
    points = sweep_points(loaded)
    assert len(points) == 6 and len({json.dumps(p, sort_keys=True) for p in points}) == 6
    assert points == sweep_points(load_spec(spec))  # seeded: the same every time
    assert point_spec(loaded, points[0]).train.seed == points[0]["train.seed"]


@pytest.mark.timeout(10)
def test_random_sweep_draws_what_it_drew_before(tmp_path: Path) -> None:
    """The sampler indexes the grid instead of listing it: same points as rng.sample(grid)."""
    import itertools
    import random

    spec = tmp_path / "s.yaml"
    spec.write_text(_wide_sweep("random", 4, 3))
    loaded = load_spec(spec)
    params = loaded.spec.sweep.parameters
    keys = sorted(params)
    grid = [dict(zip(keys, c, strict=True)) for c in itertools.product(*(params[k] for k in keys))]
    assert sweep_points(loaded) == random.Random(5).sample(grid, 6)


@pytest.mark.timeout(10)
def test_grid_sweep_too_large_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(_wide_sweep("grid", 10, 5))  # 10^5 points
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "use method: random" in problem_at(info.value, spec, "sweep.parameters")


@pytest.mark.timeout(10)
def test_long_sweep_list_is_refused_not_copied_quadratically(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "sweep:\n  parameters:\n    train.seed: [" + "1," * 15000 + "1]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "at most 1,000" in problem_at(info.value, spec, "sweep.parameters.train.seed")


@pytest.mark.timeout(20)
def test_sweep_at_the_limit_compiles_every_point(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    values = ", ".join(str(i) for i in range(1000))
    spec.write_text(BASE + f"sweep:\n  parameters:\n    train.seed: [{values}]\n")
    loaded = load_spec(spec)
    points = sweep_points(loaded)
    assert len(points) == 1000
    assert [point_spec(loaded, p).train.seed for p in points] == list(range(1000))


@pytest.mark.timeout(10)
def test_sweep_values_that_conflict_together_are_a_problem(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    # data.* cannot be swept (ingest reads it once): the plan's own keys (a fold) take this path
    spec.write_text(BASE + "sweep:\n  parameters:\n    train.seed: [1]\n")
    loaded = load_spec(spec)
    with pytest.raises(SpecError) as info:
        point_spec(loaded, {"data.augment.x.copies": 1, "data.augment.x.target_count": 5})
    assert "not both" in problem_at(info.value, spec, "sweep.parameters")


def test_bad_spec_through_the_cli_is_one_message_no_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(LAUGHS + "\n")
    proc = xv("validate", str(spec), check=False, timeout=60)
    assert proc.returncode == 1 and "alias" in proc.stderr
    no_traceback(proc)


def test_validate_says_what_compile_refuses_and_a_thin_select_warns(tmp_path: Path) -> None:
    """Minor findings: a study with folds fails `validate` (not only `compile`), naming
    data.split.folds at its line; select: 0.999 warns with the counts each fold trains on."""
    from xvhpc.data.catalog import build_catalog
    from xvhpc.data.synth import make_dataset
    from xvhpc.spec import SpecError, load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: t\ndata: {source: /nowhere, split: {folds: 3}}\nmodel: {arch: resnet18}\n"
        "sweep: {method: tpe, trials: 4, parameters: "
        "{train.learning_rate: {low: 0.001, high: 0.1, log: true}}}\n"
    )
    with pytest.raises(SpecError, match=r"s.yaml:2: data.split.folds: cross-validation needs"):
        load_spec(spec)
    source = make_dataset(tmp_path / "data", per_class=6, size=32, seed=1)
    thin = DataSpec(source=str(source), split={"folds": 3, "select": 0.9, "seed": 1})
    notes = build_catalog(source, thin).notes
    assert any(n.startswith("warning: data.split.select 0.9 leaves fold") for n in notes), notes
    fine = DataSpec(source=str(source), split={"folds": 3, "seed": 1})
    assert not [n for n in build_catalog(source, fine).notes if n.startswith("warning:")]
