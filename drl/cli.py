"""drl-train: compose the config, validate it, train, clean up."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from drl.config import ConfigError, register_configs, validate


def config_dir() -> str:
    """conf/ beside the package in a source checkout, drl/conf in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise SystemExit("drl-train: cannot find the config directory (conf/); reinstall drl.")


def _fail(message: str, code: int = 2) -> None:
    print(f"drl-train: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(cfg: DictConfig) -> float:
    """The Hydra task: returns the final mean reward, the objective of sweeps."""
    try:
        config = validate(cfg)
    except ConfigError as e:
        _fail(f"invalid config: {e}")
    from drl.train import NonFiniteError, train  # heavy imports after the config is known to be good

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return train(config, run_dir, OmegaConf.to_container(cfg, resolve=True))
    except (ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    except NonFiniteError as e:
        _fail(str(e), code=3)


def main() -> None:
    register_configs()
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(run)()


if __name__ == "__main__":
    main()
