"""Evaluation of control policies: mean return, D4RL-normalised score, action scatter plots, videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from drl.envs.chunking import Horizons
from drl.envs.episodes import Actor, run_episodes

EVAL_SEED_OFFSET = 50_000  # evaluation episodes never share resets with training episodes


def normalized_score(mean_return: float, ref_min: float | None, ref_max: float | None) -> float | None:
    """D4RL's score: 100 * (R - R_random) / (R_expert - R_random); None without reference returns."""
    if ref_min is None or ref_max is None:
        return None
    return 100.0 * (mean_return - ref_min) / (ref_max - ref_min)


def evaluate(
    env_id: str,
    actor: Actor,
    episodes: int,
    seed: int,
    ref_min: float | None = None,
    ref_max: float | None = None,
    horizons: Horizons = Horizons(),
    **vector,
) -> dict:
    """Mean and spread of the return over ``episodes`` seeded episodes (+ the normalised score); ``vector``: run_episodes' num_envs, vector_mode."""
    returns = np.array([e.total_reward for e in run_episodes(env_id, actor, episodes, seed + EVAL_SEED_OFFSET, horizons=horizons, **vector)])
    result = {"eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std()), "eval/episodes": episodes}
    score = normalized_score(result["eval/return_mean"], ref_min, ref_max)
    if score is not None:
        result["eval/normalized_score"] = score
    return result


def save_video(env_id: str, actor: Actor, path: Path, seed: int, fps: int = 30, horizons: Horizons = Horizons()) -> Path:
    """Render one episode headless (MuJoCo: MUJOCO_GL=egl) into an animated GIF (chunked: one frame per chunk)."""
    (episode,) = run_episodes(env_id, actor, 1, seed + EVAL_SEED_OFFSET, render=True, horizons=horizons)
    frames = [Image.fromarray(np.asarray(f)) for f in episode.frames if f is not None]
    if not frames:
        raise ValueError(f"env.id={env_id!r} renders no frames; set env.video=false.")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def scatter_actions(actions: np.ndarray, path: Path, title: str, dataset_actions: np.ndarray | None = None) -> Path:
    """2-D actions [N, 2] as a scatter plot over the bandit's reward landscape (and the data, grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drl.envs.bandit import bandit_reward

    grid = np.linspace(-1, 1, 101)
    xx, yy = np.meshgrid(grid, grid)
    rewards = bandit_reward(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.contourf(xx, yy, rewards, levels=20, cmap="Greens", alpha=0.6)
    if dataset_actions is not None:
        ax.scatter(dataset_actions[:, 0], dataset_actions[:, 1], s=2, c="grey", alpha=0.3, label="dataset")
    ax.scatter(actions[:, 0], actions[:, 1], s=4, c="tab:red", alpha=0.6, label="policy")
    ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), title=title, xlabel="a[0]", ylabel="a[1]")
    ax.legend(loc="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
