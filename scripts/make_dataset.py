"""Make an offline dataset file (drl/envs/dataset.py's format) from a behaviour policy.

    python scripts/make_dataset.py --env-id Pendulum-v1 --size 100000 --out data/pendulum-random.npz
    python scripts/make_dataset.py --env-id Pendulum-v1 --behaviour data/pendulum-sac.pt --out data/pendulum-medium.npz
    python scripts/make_dataset.py --mix data/pendulum-medium.npz data/pendulum-expert.npz --out data/pendulum-medium-expert.npz

Without --behaviour the actions are uniform-random ("random" level); with a SAC actor saved by
scripts/train_behaviour_sac.py they are its stochastic actions ("medium" when SAC was stopped early).
Deterministic for a given --seed. --mix writes existing files of one environment one after another
(D4RL's medium-expert is its medium and expert data together).
"""

from __future__ import annotations

import argparse

import numpy as np

from drl.envs.dataset import OfflineDataset, generate_dataset


def sac_behaviour(path: str, seed: int):
    """obs [n, O] -> actions [n, A] sampled from a saved SAC actor (its own seeded generator)."""
    import torch

    from drl.models.critic import TanhGaussianActor

    saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and numbers: nothing that runs code
    actor = TanhGaussianActor(saved["obs_dim"], saved["act_dim"], 1.0, saved["hidden"])
    actor.load_state_dict(saved["actor"])
    generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return actor(torch.as_tensor(obs, dtype=torch.float32), generator)[0].numpy()

    return act


def generate(args: argparse.Namespace) -> OfflineDataset:
    from drl.envs.make import space_sizes

    _, act_dim = space_sizes(args.env_id)
    behaviour, name = (lambda obs, rng: rng.uniform(-1, 1, (len(obs), act_dim))), "random"  # noqa: E731
    if args.behaviour:
        behaviour, name = sac_behaviour(args.behaviour, args.seed), "sac"
    return generate_dataset(args.env_id, behaviour, args.size, args.seed, name=args.name or name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", help="gymnasium id, e.g. Pendulum-v1 or Hopper-v5 (not with --mix)")
    parser.add_argument("--mix", nargs="+", metavar="NPZ", help="concatenate these dataset files instead of generating")
    parser.add_argument("--size", type=int, default=100_000, help="transitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--behaviour", help="a SAC actor from scripts/train_behaviour_sac.py (default: uniform-random)")
    parser.add_argument("--name", default=None, help="the behaviour's name in the metadata (default: random / sac)")
    parser.add_argument("--out", required=True, help="output .npz path")
    args = parser.parse_args()
    if bool(args.mix) == bool(args.env_id):
        parser.error("give either --env-id (generate a dataset) or --mix FILE [FILE ...] (concatenate files)")
    if args.mix:
        try:
            dataset = OfflineDataset.concatenate([OfflineDataset.load(path) for path in args.mix])
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"make_dataset.py: {error}") from None
    else:
        dataset = generate(args)
    path = dataset.save(args.out)
    print(f"{path}: {len(dataset)} transitions, {dataset.metadata['episodes']} episodes, mean return {dataset.metadata['return_mean']:.1f}")
    assert np.isfinite(dataset.rewards).all()


if __name__ == "__main__":
    main()
