"""drl-train: compose the config, validate it, train, clean up."""

from __future__ import annotations

import json
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


PREEMPTED_EXIT_CODE = 143  # like a process ended by SIGTERM; stopped on a signal after checkpointing: rerun (or the requeued job) resumes


def _fail(message: str, code: int = 2, program: str = "drl-train") -> None:
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(cfg: DictConfig) -> float:
    """The Hydra task: returns the final mean reward, the objective of sweeps."""
    try:
        config = validate(cfg)
    except ConfigError as e:
        _fail(f"invalid config: {e}")
    from drl import distributed
    from drl.preemption import Preempted
    from drl.train import NonFiniteError, train  # heavy imports after the config is known to be good

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if distributed.needs_relaunch(config.hardware):
            return relaunched(config, run_dir)
        distributed.setup(config.hardware)
        run_dir = distributed.broadcast_object(run_dir)  # ranks started apart may stamp different times
        return train(config, run_dir, OmegaConf.to_container(cfg, resolve=True))
    except (ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    except NonFiniteError as e:
        _fail(str(e), code=3)
    except Preempted as e:
        _fail(str(e), code=PREEMPTED_EXIT_CODE)


def relaunched(config, run_dir: Path) -> float:
    """Run the job in hardware.num_processes ranks under torchrun; the sweep objective comes from its metrics."""
    from drl import distributed

    code = distributed.relaunch(config.hardware, list(HydraConfig.get().overrides.task), run_dir)
    if code != 0:
        _fail(f"the {config.hardware.num_processes} ranks under torchrun exited with status {code}.", code=code)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return next((r["reward_mean"] for r in reversed(records) if "reward_mean" in r), float("nan"))


def main() -> None:
    register_configs()
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(run)()


if __name__ == "__main__":
    main()
