"""Environment steps per second of drl's rollouts with 1 vs N environments, the policy's forward in the loop.

    python scripts/bench_vector_envs.py                                  # Hopper-v5, Pendulum-v1, the bandit; 5 repeats
    python scripts/bench_vector_envs.py --envs Hopper-v5 --repeats 9 --num-envs 4 --json out.json
    python scripts/bench_vector_envs.py --actor random                   # no policy: the environments' and IPC's cost alone

Each measurement is one ``run_episodes`` call (drl/envs/episodes.py), as evaluation and the online
collectors make it: the vector env's start and close are included. The actor is a diffusion policy
(random weights of the shipped size: model.hidden_dim=256, 3 layers) running its denoising chain (--denoising-steps)
for every env step, on one torch thread. Settings:

- ``1 env``: one environment running the episodes one after another (a SyncVectorEnv of one env,
  through drl.envs.vector): one actor call per step, batch 1;
- ``num_envs=N sync``: a gymnasium SyncVectorEnv: N envs in this process, batch <= N;
- ``num_envs=N async``: a gymnasium AsyncVectorEnv: N subprocesses, batch <= N;
- ``num_envs=1 (default)``: drl's default path: every episode in its own env in this process, all
  stepped together, one actor call per step over all running episodes (batch = episodes still running).

The settings run interleaved (A B C, A B C, ...) so that a load change on a shared machine hits all of
them alike; the table gives the median steps/s and the min-max over repeats. The same seed gives the
same episodes in every setting when the actor is deterministic (tests/test_vector_envs.py); here the
policy samples, so episode lengths (and thus step counts) may differ a little between settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from drl.config import PolicyModelConfig
from drl.envs.collector import policy_actor
from drl.envs.episodes import run_episodes
from drl.envs.make import BANDIT_ID, space_sizes
from drl.envs.vector import run_vector_episodes
from drl.models.policy import DiffusionPolicy
from drl.sampling import make_schedule

EPISODES = {"Hopper-v5": 16, "Pendulum-v1": 8, BANDIT_ID: 256}  # enough steps per call to dwarf its start-up


SETTINGS = ("1 env", "num_envs=N sync", "num_envs=N async", "num_envs=1 (default)")


def measure(env_id: str, episodes: int, setting: str, num_envs: int, actor_factory, seed: int) -> tuple[int, float]:
    """(env steps, seconds) of one rollout of ``episodes`` episodes in ``setting``."""
    start = time.perf_counter()
    if setting == "1 env":
        result = run_vector_episodes(env_id, actor_factory(), episodes, seed, 1, "sync")  # each episode's list of steps
    else:
        n, mode = (1, "sync") if setting == "num_envs=1 (default)" else (num_envs, setting.split()[-1])
        result = run_episodes(env_id, actor_factory(), episodes, seed, num_envs=n, vector_mode=mode)
    return sum(len(e) for e in result), time.perf_counter() - start


def uniform_actor(act_dim: int, seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: (rng.uniform(-1, 1, (len(obs), act_dim)).astype(np.float32), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "Pendulum-v1", BANDIT_ID])
    parser.add_argument("--num-envs", type=int, default=4, help="N of the vector settings")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--denoising-steps", type=int, default=5, help="denoiser calls per action (Diffusion-QL's T=5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--actor", choices=["policy", "random"], default="policy", help="random: uniform actions, no policy forward")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for env_id in args.envs:
        obs_dim, act_dim = space_sizes(env_id)
        policy = DiffusionPolicy.build(obs_dim, act_dim, PolicyModelConfig(diffusion_steps=args.denoising_steps), seed=args.seed)
        schedule = make_schedule(policy.make_scheduler("ddpm"), args.denoising_steps)
        actor_factory = lambda: policy_actor(policy, schedule, 1.0, torch.Generator().manual_seed(args.seed))  # noqa: E731
        if args.actor == "random":
            actor_factory = lambda: uniform_actor(act_dim, args.seed)  # noqa: E731
        measure(env_id, 2, "num_envs=N async", args.num_envs, actor_factory, args.seed)  # warm-up: imports, MuJoCo's first load
        rates: dict[str, list[float]] = {s: [] for s in SETTINGS}
        steps: dict[str, list[int]] = {s: [] for s in SETTINGS}
        for r in range(args.repeats):
            for setting in SETTINGS:
                n, seconds = measure(env_id, EPISODES.get(env_id, 16), setting, args.num_envs, actor_factory, args.seed + r)
                rates[setting].append(n / seconds)
                steps[setting].append(n)
        for setting, values in rates.items():
            name = setting.replace("=N", f"={args.num_envs}")
            rows.append(
                {
                    "env": env_id,
                    "setting": name,
                    "steps_per_s_median": statistics.median(values),
                    "steps_per_s_min": min(values),
                    "steps_per_s_max": max(values),
                    "steps_per_call_median": statistics.median(steps[setting]),
                    "repeats": len(values),
                }
            )
            print(
                f"{env_id:28s} {name:22s} {statistics.median(values):9.1f} steps/s  "
                f"(min {min(values):.1f}, max {max(values):.1f}; {statistics.median(steps[setting]):.0f} steps per call)",
                flush=True,
            )
    if args.json:
        meta = {"cpus": os.cpu_count(), "torch_threads": 1, "denoising_steps": args.denoising_steps, "num_envs": args.num_envs, "actor": args.actor}
        with open(args.json, "w") as f:
            json.dump({"settings": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
