"""Measure where DSRL's critics and noise actor go wrong on Pendulum-v1 (a diagnostic, not a trainer).

    python scripts/diagnose_dsrl.py --policy <pendulum_bc run dir> --variant na --epochs 12 [--actor-via-chain]

Runs the experiment=pendulum_dsrl algorithm epoch by epoch (the same collect/update as drl-train) and,
every --every epochs, prints one JSON line:
  ret_mode / ret_sample  evaluation return of the noise actor's mode / its samples (5 episodes)
  mc_G, Q*_mean, Q*_corr critic at the visited (s, w) against Monte-Carlo discounted returns of the
                         sampling actor (first 100 steps of 400-step episodes, so the tail is small)
  true_spread            how much the true return differs over a noise grid {-1.5 .. 1.5} within a state
                         (first action pi_W(s, w), then the sampling actor; 12 states x 5 noises x 2)
  Q*_true_corr           within-state correlation of a critic with that truth (the actor needs this)
NA only: slope_sign_agree / slope_corr (the distilled Q^W's slope in w at the actor's mode against
d/dw Q^A(s, pi_W(s, w)) through the chain), distill_bias, mode_w_mean / mode_w_saturated, and
action_R2 (how much of the executed action the state explains: the action critic's confounding).
--actor-via-chain replaces the actor's critic by Q^A(s, pi_W(s, w)) (an ablation of the distillation).
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from drl.compose import compose_config
from drl.runtime import seed_everything
from drl.train import build_context

NOISE_GRID = torch.tensor([-1.5, -0.75, 0.0, 0.75, 1.5])


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", required=True, help="a pendulum_bc run directory")
    parser.add_argument("--variant", default="na", choices=["sac", "na"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--actor-via-chain", action="store_true")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="drl-train overrides, e.g. algorithm.updates_per_epoch=150",
    )
    return parser.parse_args()


class Probe:
    """Rollouts from chosen Pendulum states and the critics' numbers against them."""

    def __init__(self, alg, gamma: float):
        self.alg, self.gamma = alg, gamma

    @torch.no_grad()
    def act(
        self, states: torch.Tensor, mode: str, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w, _ = self.alg.actor(states, g, deterministic=mode == "mode")
        return w, self.alg.steer(states, w)

    @torch.no_grad()
    def rollout(
        self, n: int, mode: str, seed: int, steps: int, start=None, first_actions=None
    ):
        """n episodes of ``steps`` (Pendulum without its 200-step limit); start: [(theta, theta_dot)]."""
        g = torch.Generator().manual_seed(seed)
        envs = [
            gym.wrappers.RescaleAction(
                gym.make("Pendulum-v1", max_episode_steps=steps), -1.0, 1.0
            )
            for _ in range(n)
        ]
        obs = np.stack([e.reset(seed=seed + k)[0] for k, e in enumerate(envs)]).astype(
            np.float32
        )  # [n, 3]
        for k, e in enumerate(envs if start is not None else []):
            e.unwrapped.state = np.array(start[k], dtype=np.float64)
            obs[k] = [np.cos(start[k][0]), np.sin(start[k][0]), start[k][1]]
        record = {"obs": [], "w": [], "a": [], "r": []}
        for t in range(steps):
            w, a = self.act(torch.as_tensor(obs), mode, g)
            if t == 0 and first_actions is not None:
                a = first_actions
            out = [e.step(a[k].numpy()) for k, e in enumerate(envs)]
            for key, value in (
                ("obs", obs.copy()),
                ("w", w.numpy()),
                ("a", a.numpy()),
                ("r", [o[1] for o in out]),
            ):
                record[key].append(value)
            obs = np.stack([o[0] for o in out]).astype(np.float32)
        return {
            k: np.stack(v, 1) for k, v in record.items()
        }  # obs [n, T, 3], w/a [n, T, 1], r [n, T]

    def returns_to_go(self, r: np.ndarray) -> np.ndarray:
        out, running = np.zeros_like(r, dtype=np.float64), np.zeros(r.shape[0])
        for t in range(r.shape[1] - 1, -1, -1):
            running = r[:, t] + self.gamma * running
            out[:, t] = running
        return out


def within_corr(critic: np.ndarray, truth: np.ndarray) -> float:
    """Correlation of [S, K] values after removing each state's mean (only the ranking within a state matters)."""
    c, t = critic - critic.mean(1, keepdims=True), truth - truth.mean(1, keepdims=True)
    return float(np.corrcoef(c.reshape(-1), t.reshape(-1))[0, 1])


@torch.no_grad()
def measure(alg, probe: Probe, epoch: int, bound: float) -> dict[str, float]:
    na = alg.cfg.variant == "na"
    out: dict[str, float] = {"epoch": epoch}
    for mode in ("mode", "sample"):
        out[f"ret_{mode}"] = float(probe.rollout(5, mode, 1000, 200)["r"].sum(1).mean())
    # Critics against Monte-Carlo returns of the sampling actor.
    ep = probe.rollout(4, "sample", 2000, 400)
    G = probe.returns_to_go(ep["r"])[:, :100].reshape(-1)
    s = torch.as_tensor(ep["obs"][:, :100].reshape(-1, 3))
    w = torch.as_tensor(ep["w"][:, :100].reshape(-1, 1))
    a = torch.as_tensor(ep["a"][:, :100].reshape(-1, 1))
    qw = alg.noise_critic.q_min(s, w).numpy()
    out.update(
        mc_G=float(G.mean()),
        QW_mean=float(qw.mean()),
        QW_corr=float(np.corrcoef(qw, G)[0, 1]),
    )
    if na:
        qa = alg.action_value(alg.action_critic, s, a).numpy()
        out.update(QA_mean=float(qa.mean()), QA_corr=float(np.corrcoef(qa, G)[0, 1]))
    # The truth over a noise grid, within states the actor visits.
    o = ep["obs"][0, 10::25][:12]  # [12, 3]
    start = [(float(np.arctan2(x[1], x[0])), float(x[2])) for x in o]
    reps, k = 2, len(NOISE_GRID)
    S0 = torch.as_tensor(o)
    Sx, Wx = (
        S0.repeat_interleave(k * reps, 0),
        NOISE_GRID.repeat_interleave(reps).repeat(len(o))[:, None],
    )
    first = alg.steer(Sx, Wx)
    r = probe.rollout(
        len(Sx),
        "sample",
        3000,
        300,
        [start[i // (k * reps)] for i in range(len(Sx))],
        first,
    )["r"]
    truth = probe.returns_to_go(r)[:, 0].reshape(len(o), k, reps).mean(2)  # [12, K]
    Sg, Wg = S0.repeat_interleave(k, 0), NOISE_GRID.repeat(len(o))[:, None]
    out["true_spread"] = float(np.ptp(truth, 1).mean())
    out["QW_true_corr"] = within_corr(
        alg.noise_critic.q_min(Sg, Wg).view(len(o), k).numpy(), truth
    )
    if na:
        out["QA_true_corr"] = within_corr(
            alg.action_value(alg.action_critic, Sg, alg.steer(Sg, Wg))
            .view(len(o), k)
            .numpy(),
            truth,
        )
        buffer = alg.buffer.data
        n = alg.buffer.size
        states = buffer.observations[
            torch.randperm(n, generator=torch.Generator().manual_seed(epoch))[:256]
        ]
        mode_w, _ = alg.actor(states, None, deterministic=True)
        with torch.enable_grad():
            w1, w2 = (
                mode_w.clone().requires_grad_(True),
                mode_w.clone().requires_grad_(True),
            )
            g_w = torch.autograd.grad(alg.noise_critic.q_min(states, w1).sum(), w1)[0][
                :, 0
            ]
            g_a = torch.autograd.grad(
                alg.action_value(
                    alg.action_critic, states, alg.steer(states, w2)
                ).sum(),
                w2,
            )[0][:, 0]
        gap = alg.noise_critic.q_min(states, mode_w) - alg.action_value(
            alg.action_critic, states, alg.steer(states, mode_w)
        )
        X = buffer.observations[:n].double()
        F = torch.stack(
            [
                torch.ones(n),
                X[:, 0],
                X[:, 1],
                X[:, 2],
                X[:, 0] * X[:, 2],
                X[:, 1] * X[:, 2],
                X[:, 2] ** 2,
            ],
            1,
        )
        y = buffer.actions[:n, 0].double()
        fit = F @ torch.linalg.lstsq(F, y[:, None]).solution
        out.update(
            slope_sign_agree=float((g_w.sign() == g_a.sign()).float().mean()),
            slope_corr=float(np.corrcoef(g_w.numpy(), g_a.numpy())[0, 1]),
            distill_bias=float(gap.mean()),
            mode_w_mean=float(mode_w.mean()),
            mode_w_saturated=float((mode_w.abs() > 0.9 * bound).float().mean()),
            action_R2=float(1 - (y - fit[:, 0]).var() / y.var()),
        )
    out["alpha"] = float(alg.log_alpha.exp())
    return out


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    overrides = [
        "experiment=pendulum_dsrl",
        f"model.path={args.policy}",
        f"algorithm.variant={args.variant}",
        f"seed={args.seed}",
        f"train.epochs={args.epochs}",
        "env.eval_every=1000000",  # this script measures; the algorithm's own evaluation is skipped
        "logger=none",
        "hardware.num_threads=1",
        *args.overrides,
    ]
    cfg = compose_config(overrides)
    seed_everything(cfg.seed)
    _, _, alg = build_context(cfg)
    if (
        args.actor_via_chain
    ):  # the actor's critic becomes Q^A through the frozen chain: no distillation
        alg.noise_critic.q_min = lambda s, w: alg.action_value(
            alg.action_critic, s, alg.steer(s, w)
        )
    probe, generator, start = (
        Probe(alg, cfg.env.gamma),
        torch.Generator().manual_seed(cfg.seed),
        time.time(),
    )
    for epoch in range(args.epochs):
        metrics = alg.update(alg.collect(generator), epoch)
        line = {
            "epoch": epoch,
            "train_return": metrics["reward_mean"],
            "entropy": metrics["train/entropy"],
            "s": round(time.time() - start),
        }
        if epoch % args.every == args.every - 1 or epoch == args.epochs - 1:
            line.update(measure(alg, probe, epoch, cfg.algorithm.noise_bound))
        print(
            json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in line.items()}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
