"""Evaluate a saved control policy at several sampling step counts: its return and its sampling time per action.

    python scripts/eval_policy_steps.py RUN_DIR --env-id Hopper-v5 --steps 1 4 10 --episodes 20 [--sampler ddim] [--out x.json]

RUN_DIR is a drl-train run dir (or its policy/). A flow policy samples by its ODE (scheduler kind flow, eta 0); a
diffusion policy by ``--sampler``: ddim (eta 0, "trailing" spacing, so that 1 step starts at the last training
timestep) or ddpm (its training sampler; "leading" spacing, as a run samples). The return is over ``--episodes``
seeded episodes (drl.envs.evaluate, the episodes side by side); the time is one state at a time (a robot acting):
``--calls`` chains at batch 1, CPU (process) time and wall time per call, divided by Ta for the time per action.
Run it on one thread (OMP_NUM_THREADS=1) for times that compare.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from drl.envs.chunking import Horizons
from drl.envs.collector import policy_actor
from drl.envs.evaluate import evaluate
from drl.models.policy import load_policy
from drl.sampling import make_schedule


def schedule_for(policy, sampler: str, steps: int):
    if policy.kind == "flow":
        return make_schedule(policy.make_scheduler("flow"), steps), 0.0
    if sampler == "ddim":
        return make_schedule(DDIMScheduler.from_config(policy.scheduler_config, timestep_spacing="trailing"), steps), 0.0
    return make_schedule(DDPMScheduler.from_config(policy.scheduler_config), steps), 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="a diffusion policy's sampler")
    parser.add_argument("--calls", type=int, default=300, help="batch-1 chains timed per step count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the results here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.run_dir)
    horizons = Horizons(policy.obs_shape[0] if len(policy.obs_shape) > 1 else 1, policy.action_shape[0] if len(policy.action_shape) > 1 else 1)
    results = []
    for steps in args.steps:
        schedule, eta = schedule_for(policy, args.sampler, steps)
        actor = policy_actor(policy, schedule, eta, torch.Generator().manual_seed(args.seed))
        result = evaluate(args.env_id, actor, args.episodes, args.seed, horizons=horizons)
        state = np.zeros((1, *policy.obs_shape), np.float32)
        actor(state)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.calls):
            actor(state)
        cpu, wall = (time.process_time() - cpu) / args.calls, (time.perf_counter() - wall) / args.calls
        row = {
            "policy": policy.kind,
            "sampler": "flow ODE" if policy.kind == "flow" else args.sampler,
            "steps": steps,
            "return_mean": result["eval/return_mean"],
            "return_std": result["eval/return_std"],
            "episodes": args.episodes,
            "cpu_ms_per_action": 1000 * cpu / horizons.action,
            "wall_ms_per_action": 1000 * wall / horizons.action,
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
