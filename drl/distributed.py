"""Data-parallel runs: where the ranks come from, how they start, and what they must agree on.

Every rank runs the one loop of drl/train.py on its own prompts and noise (seeded per rank).
What has to be identical or shared is made so here:

- the process group comes from the launcher's environment: torchrun and ``accelerate launch``
  (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) or ``srun`` (SLURM_PROCID, SLURM_STEP_NUM_TASKS,
  SLURM_LOCALID, SLURM_JOB_NODELIST); accelerate's PartialState then opens it (gloo on CPU, NCCL on CUDA);
- weights start equal (broadcast from rank 0) and stay equal: gradients are averaged over ranks
  before clipping, exactly what DistributedDataParallel's all-reduce does, for full weights and LoRA
  alike, and whatever the algorithm's forward/backward pattern (checkpointing, accumulation);
- rewards are gathered, so reward statistics and per-prompt normalisation see every rank's samples;
- metrics are reduced over ranks, then rank 0 alone writes files and W&B.

Every helper is a no-op in a single process, so the single-process run is unchanged.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from drl.config import HardwareConfig
from drl.errors import ConfigError

RANK_SEED_STRIDE = 100_003  # rank r samples with seed + r * stride: different noise and prompts per rank
# Totals over ranks: counts, throughput, the epoch's CPU seconds (user + sys) and denoiser calls (sample-steps
# through the denoiser, guided ones counted twice) are the job's, summed over its processes.
SUMMED_METRICS = {"samples", "samples_per_s", "train/pairs", "cpu_s", "train/denoiser_calls_sample", "train/denoiser_calls_update"}
GRADIENT_BUCKET_ELEMENTS = 2**24  # float32: 64 MB per all-reduce call, bounded extra memory for large models
MAX_METRICS = {"train/ratio_dev_first", "sample_time_s", "update_time_s"}  # worst rank / wall time


# ------------------------------------------------------------------ environment
@dataclass(frozen=True)
class LaunchEnv:
    """This process's place in a job that a launcher started."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str  # torchrun (also accelerate launch) | slurm


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[03-05,07],cpu1" -> "gpu03"."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ValueError(f"Cannot read the SLURM node list {nodelist!r}.")
    prefix, ranges = match.groups()
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def launch_env(environ: dict | None = None) -> LaunchEnv | None:
    """The ranks a launcher set up, or None when this is a lone process.

    srun is read from the step's variables (SLURM_STEP_NUM_TASKS), not SLURM_NTASKS: the batch
    script of a 2-task job also sees SLURM_NTASKS=2 but is a single process.
    """
    env = os.environ if environ is None else environ
    if int(env.get("WORLD_SIZE", 1)) > 1:
        return LaunchEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return LaunchEnv(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env.get("SLURM_LOCALID", 0)), "slurm")
    return None


def export_slurm_rendezvous(launch: LaunchEnv, environ: dict | None = None) -> None:
    """Turn srun's variables into the ones torch.distributed reads (rank 0's host, a port per job)."""
    env = os.environ if environ is None else environ
    env.setdefault("MASTER_ADDR", first_host(env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", "127.0.0.1"))))
    env.setdefault("MASTER_PORT", str(20_000 + int(env.get("SLURM_JOB_ID", 0)) % 20_000))
    env.update(
        RANK=str(launch.rank),
        WORLD_SIZE=str(launch.world_size),
        LOCAL_RANK=str(launch.local_rank),
        LOCAL_WORLD_SIZE=env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0],
    )


def needs_relaunch(hw: HardwareConfig) -> bool:
    """More than one process was asked for, and no launcher started them."""
    return hw.num_processes * hw.num_nodes > 1 and launch_env() is None


# -------------------------------------------------------------------- set up
def setup(hw: HardwareConfig) -> None:
    """Join the launcher's process group (idempotent); nothing to do in a lone process."""
    launch = launch_env()
    if launch is None or dist.is_initialized():
        return
    if launch.launcher == "slurm":
        export_slurm_rendezvous(launch)
    cuda = torch.cuda.is_available() and hw.device != "cpu"
    backend = hw.backend if hw.backend != "auto" else ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(launch.local_rank)  # "cuda" now means this rank's GPU
    from accelerate import PartialState

    PartialState(cpu=not cuda, backend=backend)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def rank_seed(seed: int) -> int:
    """Rank 0 keeps ``seed`` (a 1-process run is unchanged); rank r gets its own stream."""
    return seed + RANK_SEED_STRIDE * rank()


# ------------------------------------------------------------------ collectives
def _comm_device() -> torch.device:
    """Where tensors must live for the backend: NCCL reduces CUDA tensors only, gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Rank 0's values on every rank: one identical start, as DDP does when it wraps a model."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks, in flat buckets of ~64 MB (DDP's all-reduce, after the backward).

    A parameter without a gradient counts as zeros, so every rank sends the same buffers and the
    ranks' gradients, grad norms and "skip this step" decisions come out identical.
    """
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.nn.Parameter] = []
    size = 0
    for k, p in enumerate(params):
        bucket.append(p)
        size += p.numel()
        if size >= GRADIENT_BUCKET_ELEMENTS or k == len(params) - 1:
            flat = torch.cat([q.grad.reshape(-1) for q in bucket])
            dist.all_reduce(flat)
            flat /= world_size()
            for q, g in zip(bucket, flat.split([q.numel() for q in bucket])):
                q.grad.copy_(g.view_as(q.grad))
            bucket, size = [], 0


def gather_rewards(rewards: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, list[str], slice]:
    """Every rank's rewards [W*B] and prompts (rank-major), and this rank's slice of them.

    Each rank holds the same number of samples per epoch, as train.samples_per_epoch is per process.
    """
    n = rewards.shape[0]
    if world_size() == 1:
        return rewards, list(prompts), slice(0, n)
    local = rewards.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    names: list[list[str]] = [[] for _ in range(world_size())]
    dist.all_gather_object(names, list(prompts))
    return torch.cat(parts).to(rewards.device), [p for part in names for p in part], slice(rank() * n, (rank() + 1) * n)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any: decisions that change the control flow are collective."""
    if world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def reduce_metrics(record: dict) -> dict:
    """One record for the job: the mean over ranks, totals for counts, the worst rank for times.

    A per-rank reward_mean/reward_std pair (algorithms that sample inside update()) is pooled:
    with equal counts, std^2 = mean_r(std_r^2 + mean_r^2) - mean^2.
    """
    records = gather_objects(record)
    if len(records) == 1:
        return dict(record)
    out = {}
    for key, value in record.items():
        values = [r[key] for r in records if r.get(key) is not None]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or len(values) != len(records):
            out[key] = value
        elif key in SUMMED_METRICS:
            out[key] = sum(values)
        elif key in MAX_METRICS:
            out[key] = max(values)
        else:
            out[key] = sum(values) / len(values)
    if "reward_std" in out and "reward_mean" in out:
        second_moment = sum(r["reward_std"] ** 2 + r["reward_mean"] ** 2 for r in records) / len(records)
        out["reward_std"] = math.sqrt(max(0.0, second_moment - out["reward_mean"] ** 2))
    if "epoch" in record:
        out["epoch"] = record["epoch"]
    return out


# ------------------------------------------------------------------- relaunch
def relaunch(hw: HardwareConfig, overrides: list[str], run_dir: Path) -> int:
    """Run this same drl-train command under torchrun with hw.num_processes ranks; returns its exit code.

    All ranks share ``run_dir`` (hydra.run.dir). Signals sent to this process are forwarded to the
    ranks, which checkpoint and stop on the preemption signals (drl/preemption.py).
    """
    if hw.num_nodes > 1:
        raise ConfigError(
            f"hardware.num_nodes={hw.num_nodes} needs one launch per node: submit with +launcher=slurm "
            "(or run `srun drl-train ...` / `torchrun --nnodes ...` on every node)."
        )
    kept = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={hw.num_processes}",
        "-m", "drl.cli", *kept, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    # torchrun dies of USR1/USR2 and gives its workers only 30 s after a SIGTERM, less than an epoch
    # may need to reach its checkpoint: it ignores them (inherited), the ranks handle them.
    survive = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
    forwarded = (*survive, signal.SIGINT)  # the ranks live in their own session
    previous = {s: signal.getsignal(s) for s in forwarded}
    try:
        for s in survive:
            signal.signal(s, signal.SIG_IGN)
        child = subprocess.Popen(command, start_new_session=True)
        for s in forwarded:
            signal.signal(s, lambda signum, _frame: os.killpg(child.pid, signum))
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
