"""The in-run quality probe (drl/evaluation/hacking.py) for a finished drl-train run, e.g. one made before
eval.json had it: re-samples the run's fixed evaluation inputs with the base model and with the exported
result, exactly as drl/train.py does before and after training, and prints the summary and the warning.

    python scripts/run_quality.py outputs/2026-12-03/10-00-00-toy_t2i-ddpo
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from drl.compose import compose_config
from drl.evaluation.hacking import QualityProbe
from drl.evaluation.models import load_spec
from drl.images import evaluation_batch
from drl.runtime import seed_everything
from drl.train import build_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    overrides = [o for o in OmegaConf.load(args.run_dir / ".hydra" / "overrides.yaml") if not o.startswith("hydra.")]
    cfg = compose_config([*overrides, "logger=none"])
    seed_everything(cfg.seed)
    ctx, reward, _ = build_context(cfg)
    probe = QualityProbe.for_run(cfg, ctx.model, ctx.device)
    batches = {"before": evaluation_batch(ctx, reward, cfg.seed)[0]}
    trained = load_spec(str(args.run_dir), cfg.model).model
    ctx.model.denoiser.load_state_dict(trained.denoiser.state_dict())
    batches["after"] = evaluation_batch(ctx, reward, cfg.seed)[0]
    with tempfile.TemporaryDirectory() as scratch:
        quality = {stage: probe.observe(Path(scratch), stage, batch.samples) for stage, batch in batches.items()}
    gain = (batches["after"].rewards - batches["before"].rewards).double()  # [N], paired
    summary = {"eval/gain": float(gain.mean()), "eval/gain_se": float(gain.std() / len(gain) ** 0.5)}
    record: dict = {"quality": quality}
    summary.update(probe.conclude(record, summary))
    print(json.dumps({**summary, "warning": record.get("warning")}, indent=1))


if __name__ == "__main__":
    with torch.no_grad():
        main()
