"""Train a SAC behaviour policy (Haarnoja et al. 2018) for the offline datasets; cleanrl-style, one loop.

    python scripts/train_behaviour_sac.py --env-id Pendulum-v1 --steps 6000 --out data/pendulum-sac.pt

Stopped early on purpose: a partly trained SAC is the "medium" behaviour of D4RL's recipe. The actor
(drl.models.critic.TanhGaussianActor, actions in [-1, 1]) is saved with its sizes; make_dataset.py
--behaviour rolls it out. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from drl.algorithms.control_losses import sac_critic_target
from drl.envs.make import make_env
from drl.models.critic import TanhGaussianActor, TwinQ, soft_update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--steps", type=int, default=6000, help="environment steps")
    parser.add_argument("--start-steps", type=int, default=1000, help="uniform-random steps first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--tau", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    env = make_env(args.env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = TanhGaussianActor(obs_dim, act_dim, 1.0, args.hidden)
    critic = TwinQ(obs_dim, act_dim, args.hidden, 2)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)
    actor_opt, critic_opt = torch.optim.Adam(actor.parameters(), args.lr), torch.optim.Adam(critic.parameters(), args.lr)
    alpha_opt = torch.optim.Adam([log_alpha], args.lr)
    buffer = {k: np.zeros((args.steps, d), np.float32) for k, d in (("o", obs_dim), ("a", act_dim), ("r", 1), ("o2", obs_dim), ("d", 1))}

    obs, _ = env.reset(seed=args.seed)
    episode_return, returns = 0.0, []
    for step in range(args.steps):
        # ------------------------------------------------------------ act
        if step < args.start_steps:
            action = rng.uniform(-1, 1, act_dim)
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32)[None], g)[0][0].numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in (("o", obs), ("a", action), ("r", reward), ("o2", next_obs), ("d", float(terminated))):
            buffer[key][step] = value
        obs, episode_return = next_obs, episode_return + reward
        if terminated or truncated:
            returns.append(episode_return)
            print(f"step {step + 1}: episode return {episode_return:.1f}", flush=True)
            obs, _ = env.reset()
            episode_return = 0.0
        if step < args.start_steps:
            continue
        # --------------------------------------------------------- update
        idx = torch.as_tensor(rng.integers(step + 1, size=args.batch_size))
        o, a, r, o2, d = (torch.as_tensor(buffer[k])[idx] for k in ("o", "a", "r", "o2", "d"))
        alpha = float(log_alpha.detach().exp())
        with torch.no_grad():
            a2, logp2 = actor(o2, g)
            y = sac_critic_target(r[:, 0], d[:, 0], critic_target.q_min(o2, a2), logp2, alpha, args.gamma)
        q1, q2 = critic(o, a)
        critic_opt.zero_grad()
        ((q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()).backward()
        critic_opt.step()
        new_a, logp = actor(o, g)
        actor_opt.zero_grad()
        (alpha * logp - critic.q_min(o, new_a)).mean().backward()
        actor_opt.step()
        alpha_opt.zero_grad()
        (-(log_alpha * (logp.detach() - act_dim))).mean().backward()  # target entropy -|A|
        alpha_opt.step()
        soft_update(critic_target, critic, args.tau)
    torch.save(
        {"obs_dim": obs_dim, "act_dim": act_dim, "hidden": args.hidden, "actor": actor.state_dict(), "env_id": args.env_id}, args.out
    )
    print(f"saved {args.out}; last 5 episode returns {np.round(returns[-5:], 1).tolist()}")


if __name__ == "__main__":
    main()
