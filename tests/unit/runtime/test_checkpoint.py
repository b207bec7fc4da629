"""Checkpoints (xvhpc/runtime/checkpoint.py) load without unpickling and restore every RNG; the best
one follows the task's selection metric in either direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def test_checkpoint_loads_weights_only_and_restores_every_rng(tmp_path: Path) -> None:
    import random

    from xvhpc.runtime.checkpoint import load_checkpoint, restore_rng, save_checkpoint

    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    np.random.normal()  # numpy caches a second gaussian: its cache must round-trip too
    state = {k: {} for k in ("model", "optimizer", "scheduler", "scaler")}
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "iteration": 3, "best": 0.5})
    expected = (np.random.normal(), np.random.randint(1 << 30), random.random(), torch.rand(1))
    np.random.seed(99)
    random.seed(99)
    torch.manual_seed(99)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt", map_location="cpu")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 3
    restore_rng(loaded)
    assert np.random.normal() == expected[0]
    assert np.random.randint(1 << 30) == expected[1]
    assert random.random() == expected[2]
    assert torch.equal(torch.rand(1), expected[3])


def test_best_checkpoint_follows_the_selection_metric_in_either_direction(tmp_path: Path) -> None:
    """The best bundle is chosen by the task's ``selection`` metric and ``mode``; a checkpoint
    holds None before the first validation, and an old one's -1.0 reads as none yet, so a
    min-mode metric's first round after a resume still counts as the best."""
    import dataclasses

    from xvhpc.registry import task_info
    from xvhpc.runtime.checkpoint import checkpoint_best, load_checkpoint, save_checkpoint

    state = {k: {} for k in ("model", "optimizer", "scheduler", "scaler")}
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "iteration": 0, "best": None})
    assert checkpoint_best(load_checkpoint(tmp_path / "checkpoint.pt", map_location="cpu")) is None
    assert checkpoint_best({"best": -1.0}) is None  # written before issue 21
    assert checkpoint_best({"best": 0.25}) == 0.25
    assert task_info("classify").selection == "val_accuracy"
    assert task_info("detect").selection == "val_map50"
    highest = task_info("classify")
    lowest = dataclasses.replace(highest, selection="val_loss", mode="min")
    assert highest.better(0.1, None) and lowest.better(9.0, None)
    assert highest.better(0.6, 0.5) and not highest.better(0.4, 0.5)
    assert lowest.better(0.4, 0.5) and not lowest.better(0.6, 0.5)
