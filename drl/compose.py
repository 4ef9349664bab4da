"""Where drl's configs live and how a command line becomes a checked Config, for every program.

drl-train, drl-eval, drl-reward-server and the scripts compose from the same conf/ directory;
this module sits below all of them (it imports only the schemas and drl.errors).
"""

from __future__ import annotations

from pathlib import Path

from drl.config import register_configs, validate
from drl.errors import ConfigError


def config_dir() -> str:
    """conf/ beside the package in a source checkout, drl/conf in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise SystemExit("drl-train: cannot find the config directory (conf/); reinstall drl.")


def compose_config(overrides: list[str]):
    """The checked Config that ``drl-train <overrides>`` would run, composed outside a Hydra job
    (scripts, the reward server): no run directory, no multirun, no launcher."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs()
    GlobalHydra.instance().clear()  # a second call in one process (tests, benchmarks) starts afresh
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        try:
            composed = compose(config_name="config", overrides=list(overrides))
        except HydraException as e:  # an unknown key or group option: Hydra's own words, as one sentence
            raise ConfigError(" ".join(str(e).split())) from None
    return validate(composed)
