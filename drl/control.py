"""Build a control run (env=...) for the one loop in drl/train.py, and what it shows and saves.

The loop is the image side's: ``algorithm.collect -> reward (rollouts only) -> algorithm.update``.
Here the collector is a dataset reader (behaviour cloning, Diffusion-QL) or the policy acting
in the environment (DSRL, DDPO, DPPO), which rewards it: no reward model is built, and a DDPO
rollout arrives with the environment's returns as its rewards. The run leaves evaluation returns,
scatter plots of the bandit's actions, a rollout video and the trained policy instead of image grids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from drl.algorithms import CONTROL, algorithm_class
from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.control_base import ControlAlgorithm
from drl.config import POLICY_MODELS, Config
from drl.envs.chunking import Horizons
from drl.envs.collector import DatasetReader, PolicyCollector
from drl.envs.dataset import OfflineDataset, bandit_dataset
from drl.envs.dataset_files import read_dataset
from drl.envs.episodes import vector_options
from drl.envs.evaluate import evaluate, save_video, scatter_actions
from drl.envs.make import BANDIT_ID, space_shapes
from drl.errors import ConfigError
from drl.models.policy import POLICY_CLASSES, DiffusionPolicy, load_policy
from drl.rewards import WeightedReward
from drl.sampling import make_schedule

SCATTER_POINTS = 500


def load_dataset(cfg: Config) -> OfflineDataset:
    """env.dataset (drl's .npz, a Minari dataset or a D4RL-style HDF5 file), or the bandit's behaviour data
    generated in memory (seeded by cfg.seed)."""
    if cfg.env.dataset:
        return read_dataset(cfg.env.dataset, cfg.env.id)
    return bandit_dataset(cfg.env.dataset_size, cfg.seed)


def build_policy(cfg: Config, device: torch.device) -> DiffusionPolicy:
    obs_shape, action_shape = space_shapes(cfg.env.id, Horizons.of(cfg.model))
    if cfg.model.from_scratch:
        sizes = int(np.prod(obs_shape)), int(np.prod(action_shape))
        cls = POLICY_CLASSES[cfg.model.policy_kind]
        return cls.build(*sizes, cfg.model, seed=cfg.seed, obs_shape=obs_shape, action_shape=action_shape).to(device)
    policy = load_policy(cfg.model.path)
    if policy.kind != cfg.model.policy_kind:
        raise ConfigError(
            f"The policy at model.path={cfg.model.path!r} is a {policy.kind} policy; model={cfg.model.name} "
            f"expects model.policy_kind={cfg.model.policy_kind}: load it with model={POLICY_MODELS[policy.kind]}."
        )
    if (policy.obs_shape, policy.action_shape) != (obs_shape, action_shape):
        raise ConfigError(
            f"The policy at model.path={cfg.model.path!r} reads observations {list(policy.obs_shape)} and acts {list(policy.action_shape)}; "
            f"env.id={cfg.env.id!r} with model.obs_horizon={cfg.model.obs_horizon} model.action_horizon={cfg.model.action_horizon} "
            f"needs {list(obs_shape)} and {list(action_shape)}."
        )
    return policy.to(device)


def build_control_context(
    cfg: Config, device: torch.device, policy: DiffusionPolicy | None = None
) -> tuple[TrainContext, WeightedReward, Algorithm]:
    """A control run's pieces (``policy``: an already built one instead of cfg.model's)."""
    policy = build_policy(cfg, device) if policy is None else policy.to(device)
    schedule = make_schedule(policy.make_scheduler(cfg.scheduler.kind), cfg.scheduler.num_steps)
    dataset = load_dataset(cfg) if cfg.algorithm.offline else None
    horizons = Horizons.of(cfg.model)
    if dataset is not None:
        collector = DatasetReader(dataset, device, horizons)
    else:
        collector = PolicyCollector(policy, schedule, cfg.env.id, cfg.scheduler.eta, cfg.env.gamma, device, horizons, **vector_options(cfg.env))
    policy.denoiser.requires_grad_(cfg.algorithm.trains_denoiser)  # False: steered frozen, through its noise (DSRL)
    params = list(policy.denoiser.parameters()) if cfg.algorithm.trains_denoiser else []
    reward = WeightedReward([], [])  # none: the environment rewards the policy (drl.envs.collector)
    ctx = TrainContext(cfg, policy, schedule, collector, None, params, reward, device)
    algorithm = algorithm_class(cfg.algorithm.name, CONTROL)(cfg.algorithm, ctx)
    ctx.hooks = ControlHooks(ctx, algorithm, collector if dataset is not None else None)
    return ctx, reward, algorithm


class ControlHooks:
    """The control side of the loop (drl.domain.DomainHooks): evaluation in the environment, plots, video,
    the drift probe and the exported policy."""

    def __init__(self, ctx: TrainContext, algorithm: ControlAlgorithm, reader: DatasetReader | None):
        self.ctx, self.algorithm = ctx, algorithm
        self.dataset = reader.dataset if reader is not None else None
        g = torch.Generator().manual_seed(ctx.cfg.seed)
        n = 16
        obs = reader.data.observations[:n] if reader is not None else torch.zeros((n, *ctx.model.obs_shape))
        # Fixed probe inputs for drift_from_base: the policy's noise prediction before vs now.
        self.probe = (
            torch.randn((n, *ctx.model.action_shape), generator=g).to(ctx.device),
            ctx.schedule.timesteps[torch.randint(ctx.schedule.num_steps, (n,), generator=g)].to(ctx.device),
            obs.to(ctx.device),
        )
        self.base_prediction = self._predict()

    def start(self, main: bool) -> None:
        """Nothing left to take: the base predictions were taken when the hooks were built."""

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {"policy": self.ctx.model.denoiser}

    @torch.no_grad()
    def _predict(self) -> torch.Tensor:
        return self.ctx.model.denoiser(*self.probe).float()

    def drift(self) -> float:
        return float((self._predict() - self.base_prediction).pow(2).mean())

    def _show(self, logger, stage: str, epoch: int) -> None:
        cfg, run_dir = self.ctx.cfg, logger.run_dir
        if not logger.enabled:
            return
        g = torch.Generator().manual_seed(cfg.seed + 11)
        act, horizons = self.algorithm.evaluation_actor(g), Horizons.of(cfg.model)
        result = evaluate(
            cfg.env.id, act, cfg.env.eval_episodes, cfg.seed, cfg.env.ref_min_score, cfg.env.ref_max_score, horizons, **vector_options(cfg.env)
        )
        (run_dir / f"eval_{stage}.json").write_text(json.dumps(result, indent=1) + "\n")
        logger.log_summary({f"{k}_{stage}": v for k, v in result.items()}, epoch)
        if cfg.env.id == BANDIT_ID and not horizons.chunked:
            actions, _ = act(np.zeros((SCATTER_POINTS, 1), np.float32))
            data = self.dataset.actions[:SCATTER_POINTS] if self.dataset is not None else None
            title = f"{cfg.algorithm.name} {stage}: mean reward {result['eval/return_mean']:.3f}"
            logger.log_image(f"actions_{stage}", scatter_actions(actions, run_dir / f"actions_{stage}.png", title, data), epoch)
        if stage == "after" and cfg.env.video:
            logger.log_video("rollout", save_video(cfg.env.id, act, run_dir / "rollout.gif", cfg.seed, horizons=horizons), epoch)

    def before(self, logger) -> None:
        if not self.ctx.cfg.algorithm.offline:  # offline methods start from noise: nothing to show
            self._show(logger, "before", 0)

    def after(self, logger) -> None:
        self._show(logger, "after", self.ctx.cfg.train.epochs)

    def export(self, run_dir: Path) -> None:
        self.algorithm.export_policy().save_pretrained(run_dir / "policy")
        if hasattr(self.algorithm, "export_extra"):
            self.algorithm.export_extra(run_dir)
