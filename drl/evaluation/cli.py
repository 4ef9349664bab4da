"""drl-eval: compose the config (conf/eval.yaml), validate it, compare the models, print the table."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from drl.compose import config_dir
from drl.config import EvalConfig, eval_problems, register_configs
from drl.errors import ConfigError, RewardError, fail

PROGRAM = "drl-eval"


def validate_eval(cfg: DictConfig) -> EvalConfig:
    """A composed DictConfig -> EvalConfig, or one ConfigError listing every fault."""
    try:
        obj: EvalConfig = OmegaConf.to_object(cfg)
    except Exception as e:  # OmegaConf's errors carry full context; keep only the first line
        raise ConfigError(str(e).splitlines()[0]) from None
    problems = eval_problems(obj)
    if problems:
        raise ConfigError(" ".join(problems))
    return obj


def run(cfg: DictConfig) -> None:
    try:
        config = validate_eval(cfg)
    except ConfigError as e:
        fail(f"invalid config: {e}", program=PROGRAM)
    from drl.evaluation.compare import TABLE_MD, compare  # heavy imports after the config is known to be good
    from drl.runtime import pick_device

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if config.hardware.num_threads > 0:
            import torch

            torch.set_num_threads(config.hardware.num_threads)
        compare(config, out_dir, pick_device(config.hardware.device))
    except (ConfigError, RewardError, FileNotFoundError) as e:  # the user's input: one sentence
        fail(str(e), program=PROGRAM)
    print((out_dir / TABLE_MD).read_text())
    print(f"(also {out_dir}/comparison.json and comparison.png)")


def main() -> None:
    register_configs()
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")(run)()


if __name__ == "__main__":
    main()
