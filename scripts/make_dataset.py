"""Make an offline dataset file (drl/envs/dataset.py's format) with a uniform-random behaviour policy.

    python scripts/make_dataset.py --env-id Pendulum-v1 --size 100000 --out data/pendulum-random.npz

Deterministic for a given --seed. Only the "random" level exists so far: the "medium"/"expert"
levels need a behaviour policy trained by drl (SAC), which is not written yet.
"""

from __future__ import annotations

import argparse

import numpy as np

from drl.envs.dataset import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", required=True, help="gymnasium id, e.g. Pendulum-v1 or Hopper-v5")
    parser.add_argument("--size", type=int, default=100_000, help="transitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .npz path")
    args = parser.parse_args()
    from drl.envs.make import space_sizes

    _, act_dim = space_sizes(args.env_id)
    uniform = lambda obs, rng: rng.uniform(-1, 1, (len(obs), act_dim))  # noqa: E731
    dataset = generate_dataset(args.env_id, uniform, args.size, args.seed, name="random")
    path = dataset.save(args.out)
    print(f"{path}: {len(dataset)} transitions, {dataset.metadata['episodes']} episodes, mean return {dataset.metadata['return_mean']:.1f}")
    assert np.isfinite(dataset.rewards).all()


if __name__ == "__main__":
    main()
