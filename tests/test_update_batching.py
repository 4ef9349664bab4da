"""The update batches (sample, timestep) pairs of several timesteps into one denoiser call.

DDPO, NFT and RWR (trajectory states) flatten an epoch into (sample, step) pairs and run the
denoiser on train.batch_size pairs per call, each pair at its own timestep; every call's loss is
scaled by its share of the minibatch. So train.batch_size sets memory and speed only: the loss and
the gradient of an optimizer step are the same, to float rounding, whatever it is.
"""

import pytest
import torch

from drl.runtime import seed_everything
from drl.train import build_context

from conftest import compose_config, tiny_model_overrides


def first_step(cfg, batch):
    """(loss, gradient of the first optimizer step [P], the timesteps of every denoiser call) of one update."""
    seed_everything(cfg.seed)  # as drl-train does: the same LoRA initialisation in every build
    ctx, _, algorithm = build_context(cfg)
    calls, grads = [], []
    denoise, optimizer_step = ctx.model.denoise, algorithm.optimizer_step

    def counted(x_t, t, *args, **kwargs):
        calls.append(t.detach().clone())  # [n] one timestep per pair
        return denoise(x_t, t, *args, **kwargs)

    def captured():
        if not grads:
            grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ctx.params]))
        return optimizer_step()

    ctx.model.denoise, algorithm.optimizer_step = counted, captured
    metrics = algorithm.update(batch, epoch=0)
    return metrics["train/loss"], grads[0], calls


def check_batch_size_changes_calls_not_gradients(overrides: list[str], small: int, large: int) -> None:
    cfg = compose_config([*overrides, f"train.batch_size={small}"])
    seed_everything(cfg.seed)
    _, _, algorithm = build_context(cfg)
    batch = algorithm.collect(torch.Generator().manual_seed(0))
    batch.rewards = torch.linspace(-1.0, 2.0, batch.batch_size)  # a spread: every advantage differs
    loss_small, grad_small, calls_small = first_step(cfg, batch)
    loss_large, grad_large, calls_large = first_step(compose_config([*overrides, f"train.batch_size={large}"]), batch)

    assert max(len(t) for t in calls_small) == small < max(len(t) for t in calls_large) <= large
    assert any(t.unique().numel() > 1 for t in calls_large)  # one call holds several timesteps
    assert len(calls_large) < len(calls_small)
    scale = float(grad_small.abs().max())
    assert scale > 0
    torch.testing.assert_close(grad_large, grad_small, rtol=1e-4, atol=1e-4 * scale)  # float32 sums in another order
    assert loss_large == pytest.approx(loss_small, rel=1e-5, abs=1e-6)  # DDPO on-policy: -mean(advantage) ~ 0


ONE_STEP = ["algorithm.minibatches=1", "train.samples_per_epoch=8"]  # one optimizer step per update


@pytest.mark.parametrize(
    "algorithm",
    [
        ["algorithm=ddpo", "algorithm.kl_coef=0.1", "algorithm.timestep_fraction=1.0"],  # the PPO and the KL terms
        ["algorithm=nft"],
        ["algorithm=rwr", "algorithm.regression_states=trajectory"],
    ],
    ids=["ddpo-kl", "nft", "rwr"],
)
def test_toy_update_gradient_does_not_depend_on_pairs_per_call(random_toy_model, algorithm):
    overrides = [f"model.path={random_toy_model}", *algorithm, *ONE_STEP]
    check_batch_size_changes_calls_not_gradients(overrides, small=3, large=32)  # 8 samples x 4 steps = 32 pairs


def test_tiny_sd15_ddpo_gradient_does_not_depend_on_pairs_per_call(tiny_dirs):
    overrides = tiny_model_overrides("sd15", tiny_dirs, "algorithm.timestep_fraction=1.0", "algorithm.minibatches=1")
    check_batch_size_changes_calls_not_gradients(overrides, small=1, large=8)  # 4 samples x 2 steps = 8 pairs
