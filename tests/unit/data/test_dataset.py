"""Rank-disjoint batches (xvhpc/data/dataset.py RankBatches): disjoint ranks covering an epoch, a
reshuffle each epoch, a resume at its start."""

from __future__ import annotations

from xvhpc.data.dataset import RankBatches


def test_rank_batches_are_disjoint_and_cover_an_epoch() -> None:
    a, b = RankBatches(100, 10, 0, 2, seed=1), RankBatches(100, 10, 1, 2, seed=1)
    epoch0_a = sum((a.batch_at(i) for i in range(5)), [])
    epoch0_b = sum((b.batch_at(i) for i in range(5)), [])
    assert not set(epoch0_a) & set(epoch0_b)
    assert len(set(epoch0_a) | set(epoch0_b)) == 100


def test_rank_batches_reshuffle_each_epoch() -> None:
    a = RankBatches(100, 10, 0, 2, seed=1)
    assert a.batch_at(0) != a.batch_at(5)  # next epoch reshuffles


def test_rank_batches_resume_at_their_start() -> None:
    a = RankBatches(100, 10, 0, 2, seed=1)
    resumed = RankBatches(100, 10, 0, 2, seed=1, start=7)
    assert next(iter(resumed)) == a.batch_at(7)
