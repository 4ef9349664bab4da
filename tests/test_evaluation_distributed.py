"""The metrics' states reduce over ranks (torchmetrics' sync on compute): two gloo processes, each holding half
of the samples, compute the same FID, KID and within-prompt diversity as one process holding all of them."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from drl.evaluation.metrics import diversity, frechet_distance, kernel_distance

N, D, PER_PROMPT = 48, 6, 3


def _data():
    g = torch.Generator().manual_seed(0)
    reference, samples = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g) * 0.8 + 0.3
    groups = [k // PER_PROMPT for k in range(N)]  # a prompt's samples stay on one rank (N / 2 is a multiple of 3)
    return reference, samples, groups


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        reference, samples, groups = _data()
        mine = slice(rank * N // 2, (rank + 1) * N // 2)  # rank 0: the first half, rank 1: the second
        result = {
            "fid": frechet_distance(reference[mine], samples[mine], sync=True),
            "kid": kernel_distance(reference[mine], samples[mine], seed=7, sync=True),
            "diversity": diversity(samples[mine], groups[mine], sync=True),
            "alone": diversity(samples[mine], groups[mine], sync=False),
        }
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # spawns two interpreters: ~20 s alone, minutes on a busy machine
@pytest.mark.timeout(300)
def test_two_ranks_reduce_to_the_single_process_values(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    reference, samples, groups = _data()
    expected = {
        "fid": frechet_distance(reference, samples),
        "kid": kernel_distance(reference, samples, seed=7),
        "diversity": diversity(samples, groups),
    }
    # Two halves' float64 sums, reduced, round differently from one sum over all (~1e-16 relative); FID's matrix
    # square root and KID's subset means keep that far below 1e-9, and the plain sum of distances below 1e-12.
    for result in ranks:
        assert result["fid"] == pytest.approx(expected["fid"], rel=1e-9)
        assert result["kid"] == pytest.approx(expected["kid"], rel=1e-9)
        assert result["diversity"] == pytest.approx(expected["diversity"], rel=1e-12)
    assert ranks[0]["alone"] != pytest.approx(expected["diversity"], rel=1e-6)  # without sync: this rank's half only
