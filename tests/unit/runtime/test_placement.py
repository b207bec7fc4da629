"""Which GPU a rank uses (xvhpc/runtime/placement.py): against the environment each real layout
produces. Real srun (CI's Slurm has GPU GRES backed by device files, so srun sets
CUDA_VISIBLE_DEVICES per task exactly as on a GPU node), real mpirun and real torchrun; jsrun's
two layouts from the variables IBM documents (no jsrun here). The CUDA device count is stood in
from CUDA_VISIBLE_DEVICES, as CUDA counts it."""

from __future__ import annotations

import pytest

from xvhpc.runtime.placement import (
    choose_gpu,
    cpu_ranges,
    duplicate_gpus,
    local_size,
    place,
    visible_gpus,
)

# One rank's view, printed as JSON: the CUDA device count stands in from CUDA_VISIBLE_DEVICES
# (unset: NODE_GPUS, every GPU of the emulated node). Torch-free, so a real launcher runs it fast.
# -- the rule, unit by unit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_rank", "ranks_on_node", "count", "expected"),
    [
        (3, 4, 1, 0),  # srun --gpus-per-task=1 / jsrun rank_per_gpu: its own GPU, never cuda:3
        (3, 4, 4, 3),  # the whole node visible: by local rank
        (5, 6, 6, 5),  # Summit all_gpus_per_rank
        (1, 2, 4, 1),  # fewer ranks than GPUs
        (3, 4, 2, 1),  # --gpus-per-task=2: inside the rank's own two
        (0, 1, 0, None),  # no GPU: CPU
    ],
)
def test_choose_gpu(local_rank: int, ranks_on_node: int, count: int, expected: int | None) -> None:
    assert choose_gpu(local_rank, ranks_on_node, count) == expected


def test_local_size_and_visible_names() -> None:
    assert local_size({"SLURM_NTASKS_PER_NODE": "4"}, 0) == 4
    assert local_size({"LOCAL_WORLD_SIZE": "2", "SLURM_NTASKS_PER_NODE": "4"}, 0) == 2
    assert local_size({}, 2) == 3
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, 2) == ("2", "3")
    assert visible_gpus({}, 3) == ("0", "1", "2")
    p = place(1, 2, {"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb", "LOCAL_WORLD_SIZE": "2"})
    assert (p.index, p.gpu) == (1, "GPU-bb")
    assert "using cuda:1 (node GPU GPU-bb)" in p.describe()
    assert cpu_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_duplicates_are_named_per_node() -> None:
    ranks = [(0, "a", "0"), (1, "a", "0"), (2, "b", "0"), (3, "a", None), (4, "a", None)]
    assert duplicate_gpus(ranks) == ["ranks 0, 1 all use GPU 0 on a"]


@pytest.mark.parametrize(
    ("layout", "env_of_rank"),
    [
        # jsrun -n12 -r6 -a1 -g1 (rank_per_gpu): one GPU per resource set, renumbered to 0
        (
            "rank_per_gpu",
            lambda r: {"CUDA_VISIBLE_DEVICES": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "6"},
        ),
        # jsrun -n2 -r1 -a6 -g6 (all_gpus_per_rank): the node's six GPUs in one resource set
        (
            "all_gpus_per_rank",
            lambda r: {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5", "OMPI_COMM_WORLD_LOCAL_SIZE": "6"},
        ),
    ],
)
def test_jsrun_layouts(layout: str, env_of_rank) -> None:
    """jsrun is not available here: the variables JSM and Spectrum MPI set (IBM JSM docs)."""
    for local in range(6):
        env = env_of_rank(local)
        p = place(local, len(env["CUDA_VISIBLE_DEVICES"].split(",")), env)
        assert p.index is not None and p.index < len(p.visible)
        expected = 0 if layout == "rank_per_gpu" else local
        assert p.index == expected


# -- real launchers ----------------------------------------------------------------------------


def test_gpu_identity_never_reports_a_false_duplicate() -> None:
    """On torch 2.0 (no UUID) jsrun rank_per_gpu numbers every rank's one GPU 0: those ranks
    are left out of the duplicate check instead of all 'sharing' GPU 0; a rank that sees the
    whole node is named by its CUDA_VISIBLE_DEVICES entry; a UUID wins where torch has one."""
    from xvhpc.runtime.placement import gpu_identity

    own = [
        place(r, 1, {"CUDA_VISIBLE_DEVICES": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "6"})
        for r in range(6)
    ]
    assert [gpu_identity(None, p) for p in own] == [None] * 6
    assert duplicate_gpus((r, "h1", gpu_identity(None, p)) for r, p in enumerate(own)) == []
    node = [
        place(r, 4, {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "LOCAL_WORLD_SIZE": "4"}) for r in range(4)
    ]
    assert [gpu_identity(None, p) for p in node] == ["0", "1", "2", "3"]
    assert gpu_identity("GPU-1234", own[3]) == "GPU-1234"
    shared = [place(0, 2, {"CUDA_VISIBLE_DEVICES": "0,1", "LOCAL_WORLD_SIZE": "1"})] * 2
    assert duplicate_gpus((r, "h1", gpu_identity(None, p)) for r, p in enumerate(shared)) == [
        "ranks 0, 1 all use GPU 0 on h1"
    ]


def _check_on_two_ranks(gpus: list[str]) -> list[str]:
    """check_distinct_gpus on two ranks (threads) sharing a real TCPStore, as after a real
    rendezvous; what each rank raised ("" for nothing)."""
    import socket as _socket
    import threading
    from datetime import timedelta

    import torch.distributed as dist

    from xvhpc.backends.base import DistInfo
    from xvhpc.runtime.distributed import check_distinct_gpus

    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wait = timedelta(seconds=30)
    stores = [dist.TCPStore("127.0.0.1", port, 2, True, wait, wait_for_workers=False)]
    stores.append(dist.TCPStore("127.0.0.1", port, 2, False, wait))
    said = ["", ""]

    def rank(r: int) -> None:
        info = DistInfo("torchrun", r, r, 2, "127.0.0.1", port)
        placement = place(0, 1, {"CUDA_VISIBLE_DEVICES": gpus[r]})
        try:
            check_distinct_gpus(stores[r], info, gpus[r], placement)
        except Exception as exc:  # noqa: BLE001  (what the rank would print)
            said[r] = str(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return said


def test_two_ranks_on_one_gpu_stop_every_rank_with_one_clear_error() -> None:
    """The check goes through the rendezvous store (no collective, no new group): both ranks
    learn of the shared GPU and stop with an error that names them and hints the fix."""
    said = _check_on_two_ranks(["GPU-aaa", "GPU-aaa"])
    for r, text in enumerate(said):
        assert f"rank {r}: two ranks would share one GPU: ranks 0, 1 all use GPU GPU-aaa" in text
        assert "HINT:" in text
    assert _check_on_two_ranks(["GPU-aaa", "GPU-bbb"]) == ["", ""]
