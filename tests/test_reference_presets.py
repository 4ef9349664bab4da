"""The reference presets (conf/experiment/ref_*.yaml) run one epoch each on a tiny random model of their family.

Composing and validating them is tests/test_configs.py (every experiment); here each trains for real, with
only sizes shrunk and the reward swapped for one that needs no downloaded weights:
    pytest -m slow tests/test_reference_presets.py
"""

import json
import math

import numpy as np
import pytest
from conftest import compose_config, read_records, tiny_model_overrides
from PIL import Image

from drl.train import train

pytestmark = pytest.mark.slow

# Sizes only: one epoch, the tiny model's resolution and steps; rewards that need no weights.
ONE_EPOCH = ["train.epochs=1", "train.eval_size=2", "logger=none", "reward=toy_aesthetic"]
T2I = {  # preset -> (family, overrides that make it fit 4 samples)
    "ref_ddpo_pytorch_aesthetic": ("sd15", []),
    "ref_trl_ddpo": ("sd15", ["train.samples_per_epoch=8"]),  # its 8 optimizer steps need 8 samples
    "ref_trl_alignprop": ("sd15", ["algorithm.gradient_accumulation=1"]),
    "ref_flow_grpo_sd35": ("sd3", ["algorithm.group_size=2"]),
    "ref_diffusion_nft_sd35": ("sd3", ["algorithm.group_size=2"]),
    "ref_diffusion_dpo_sd15": ("sd15", []),
}


def _pairs_file(root) -> str:
    """Two (prompt, chosen, rejected) pairs of 16 px images in drl's JSONL format."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(2):
        for side in ("a", "b"):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}{side}.png")
        lines.append(json.dumps({"prompt": f"pair {i}", "chosen": f"{i}a.png", "rejected": f"{i}b.png"}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return str(root / "pairs.jsonl")


@pytest.mark.parametrize("preset", list(T2I))
def test_t2i_preset_runs_one_epoch_on_its_tiny_family(tmp_path, tiny_dirs, preset):
    family, fit = T2I[preset]
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    extra = [f"prompts.path={tmp_path / 'prompts.txt'}"] if "sd35" in preset else []
    if preset == "ref_diffusion_dpo_sd15":
        extra.append(f"algorithm.pairs_path={_pairs_file(tmp_path)}")
    overrides = [f"experiment={preset}", *tiny_model_overrides(family, tiny_dirs, *ONE_EPOCH, *fit, *extra)]
    cfg = compose_config(overrides, tiny=False)
    final = train(cfg, tmp_path / "run")
    records = read_records(tmp_path / "run")
    assert len(records) == 1 and math.isfinite(records[0]["train/loss"])
    assert math.isfinite(final) or preset == "ref_diffusion_dpo_sd15"  # offline DPO samples nothing to score
    assert records[0]["drift_from_base"] > 0  # the preset's update moved the weights
    if preset == "ref_flow_grpo_sd35":
        assert cfg.algorithm.kl_form == "flow_grpo" and records[0]["train/kl_to_base"] >= 0


def test_diffusion_ql_hopper_preset_runs_one_epoch(tmp_path):
    from drl.envs.dataset import generate_dataset

    def random_behaviour(obs, rng):
        return rng.uniform(-1, 1, (len(obs), 3)).astype(np.float32)

    data = generate_dataset("Hopper-v5", random_behaviour, 64, seed=0, name="random").save(tmp_path / "hopper.npz")
    overrides = ["experiment=ref_diffusion_ql_hopper_medium", f"env.dataset={data}", "logger=none", "hardware.num_threads=1"]
    overrides += ["algorithm.steps_per_epoch=2", "train.batch_size=16", "train.epochs=1", "env.eval_episodes=1"]
    overrides += ["env.eval_every=1", "algorithm.candidates=4", "model.hidden_dim=32"]
    cfg = compose_config(overrides, tiny=False)
    assert cfg.algorithm.ema_warmup == "initial" and cfg.algorithm.ema_start == 1000
    train(cfg, tmp_path / "run")
    records = read_records(tmp_path / "run")
    assert len(records) == 1 and math.isfinite(records[0]["train/critic_loss"])
