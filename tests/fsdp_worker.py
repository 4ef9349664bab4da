"""One rank of the FSDP tests (tests/test_sharding.py starts it under torchrun on gloo).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/fsdp_worker.py OUT MODEL [overrides]

1. From the same start and the same batch, one DDPO update with hardware.sharding=ddp and one
   with fsdp (the frozen KL reference, the EMA and gradient clipping all on). Each rank saves the
   whole weights, optimizer and EMA state and the grad norms of both to OUT/rank<r>.pt.
2. The ddp run's state is loaded into a fresh fsdp run and read back whole (``roundtrip``).
3. ``drl.train.train`` runs 1 epoch with fsdp in OUT/run, then resumes to 2 epochs from its own
   checkpoint: grids, drift probe, checkpoint and export run through the sharded module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from conftest import compose_config  # tests/ is on sys.path: python runs this file as a script

from drl import distributed
from drl.checkpoint import load_trainable_state, trainable_state
from drl.train import build_context, seed_everything, train


def one_update(cfg) -> dict:
    """Build the run, collect this rank's batch, score it, take one DDPO update; return the state, whole."""
    seed_everything(cfg.seed)
    ctx, reward, algorithm = build_context(cfg)
    generator = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))
    batch = algorithm.collect(generator)
    with torch.no_grad():
        batch.rewards, batch.reward_terms = reward(batch.samples, batch.prompts, batch.metadata)
    metrics = algorithm.update(batch, epoch=0)
    return {
        "x_T": batch.latents[:, 0].clone(),
        "metrics": metrics,
        "weights": trainable_state({"unet": ctx.model.denoiser})["unet"],
        "algorithm": algorithm.state_dict(),
        "sharded_local": [p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in algorithm.params],
    }


def roundtrip(cfg, state: dict) -> dict:
    """Load a whole-tensor state into a freshly built run and read it back whole."""
    seed_everything(cfg.seed)
    ctx, _, algorithm = build_context(cfg)
    load_trainable_state({"unet": ctx.model.denoiser}, {"unet": state["weights"]})
    algorithm.load_state_dict(state["algorithm"])
    return {"weights": trainable_state({"unet": ctx.model.denoiser})["unet"], "algorithm": algorithm.state_dict()}


def main(out: Path, model_path: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    base = [f"model.path={model_path}", "algorithm.kl_coef=0.1", "algorithm.ema_decay=0.9", *overrides]
    ddp = compose_config([*base, "hardware.sharding=ddp"])
    fsdp = compose_config([*base, "hardware.sharding=fsdp"])
    distributed.setup(ddp.hardware)
    saved = {"ddp": one_update(ddp), "fsdp": one_update(fsdp)}
    saved["roundtrip"] = roundtrip(fsdp, saved["ddp"])
    torch.save(saved, out / f"rank{distributed.rank()}.pt")

    run = [*base, "hardware.sharding=fsdp", "train.save_every=1"]
    train(compose_config([*run, "train.epochs=1"]), out / "run")
    train(compose_config([*run, "train.epochs=2"]), out / "run")  # resumes from the FSDP checkpoint


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
