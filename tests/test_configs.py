"""Every option of every config group composes and validates; bad input fails clearly."""

from pathlib import Path

import pytest
from conftest import compose_config, compose_raw

from drl.algorithms.schemas.ddpo import DDPOConfig
from drl.algorithms.schemas.rwr import RWRConfig
from drl.compose import config_dir
from drl.errors import ConfigError

GROUPS = ["model", "scheduler", "reward", "algorithm", "prompts", "hardware", "logger", "debug", "experiment", "env"]
# A control option only validates inside a control run (drl/config.py control_problems says why otherwise).
CONTROL = ["env=bandit", "model=diffusion_policy", "scheduler=ddpm", "algorithm=bc"]
EXTRA = {
    "prompts=file": ["prompts.path=/tmp/prompts.txt"],
    "model=sd3": ["scheduler=flow"],
    "scheduler=flow": ["model=toy_flow"],  # toy_t2i (the default model) is refused with scheduler=flow
    "model=modelscope_t2v": ["model.path=/tmp/modelscope"],
    "model=diffusion_policy": CONTROL,
    "algorithm=diffusion_ql": CONTROL[:-1],
    "algorithm=bc": CONTROL[:-1],
    "algorithm=dsrl": CONTROL[:2] + ["model.from_scratch=false", "model.path=/tmp/policy", "scheduler.eta=0"],
    "experiment=bandit_dsrl": ["model.path=/tmp/policy"],
    "experiment=bandit_ddpo": ["model.path=/tmp/policy"],
    "algorithm=dppo": CONTROL[:-1] + ["model.from_scratch=false", "model.path=/tmp/policy", "algorithm.ft_denoising_steps=2"],
    "experiment=bandit_dppo": ["model.path=/tmp/policy"],
    "experiment=hopper_dppo": ["model.path=/tmp/policy"],
    "experiment=pendulum_dsrl": ["model.path=/tmp/policy"],
    **{f"env={name}": CONTROL[1:] for name in ("bandit", "pendulum", "hopper", "halfcheetah")},
    "model=flow_policy": ["env=bandit", "scheduler=flow", "scheduler.eta=0", "algorithm=bc"],
    "algorithm=fql": ["env=bandit", "model=flow_policy", "scheduler=flow", "scheduler.eta=0"],
    "algorithm=reinflow": ["env=bandit", "model=flow_policy", "scheduler=flow", "scheduler.eta=0", "model.from_scratch=false", "model.path=/tmp/policy"],
    "experiment=bandit_reinflow": ["model.path=/tmp/policy"],
    "experiment=hopper_reinflow": ["model.path=/tmp/policy"],
}


def group_options():
    root = Path(config_dir())
    for group in GROUPS:
        for yaml in sorted((root / group).glob("*.yaml")):
            yield f"{group}={yaml.stem}"


@pytest.mark.parametrize("option", list(group_options()))
def test_every_group_option_composes(option):
    group = option.split("=")[0]
    extra = [e for e in EXTRA.get(option, []) if not e.startswith(f"{group}=")]
    if option.startswith("experiment="):
        cfg = compose_config([option] + extra, tiny=False)
    else:
        cfg = compose_config([option] + extra)
    assert cfg.train.epochs > 0


def test_defaults_are_ddpo_on_the_toy_world():
    cfg = compose_config([], tiny=False)
    assert isinstance(cfg.algorithm, DDPOConfig)
    assert cfg.model.path == "drl:toy_t2i" and cfg.reward.terms == {"toy_aesthetic": 1.0}
    assert cfg.logger.backend == "wandb" and cfg.logger.mode == "offline"


def test_reward_group_replaces_the_terms():
    assert compose_config(["reward=jpeg_incompressibility"]).reward.terms == {"jpeg_incompressibility": 1.0}
    both = compose_config(["reward=toy_alignment", "+reward.terms.jpeg_compressibility=0.5"])
    assert both.reward.terms == {"toy_alignment": 1.0, "jpeg_compressibility": 0.5}


def test_algorithm_switch_changes_schema():
    cfg = compose_config(["algorithm=rwr", "algorithm.beta=2.5"])
    assert isinstance(cfg.algorithm, RWRConfig) and cfg.algorithm.beta == 2.5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epochs=-1"], "train.epochs=-1 must be > 0"),
        (["scheduler.eta=0"], "needs a stochastic sampler"),
        (["algorithm.timestep_fraction=1.5"], "algorithm.timestep_fraction=1.5 must be in (0, 1]"),
        (["model.finetune=half"], "model.finetune='half' is not one of full, lora"),
        (["reward.jpeg_quality=0"], "reward.jpeg_quality=0 must be > 0"),
    ],
)
def test_out_of_range_values_fail_with_a_sentence(overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        compose_config(overrides)
    assert message in str(info.value)


def test_all_faults_are_listed_at_once():
    with pytest.raises(ConfigError) as info:
        compose_config(["train.epochs=0", "scheduler.num_steps=-2", "algorithm.lr=-1"])
    text = str(info.value)
    assert "train.epochs=0" in text and "scheduler.num_steps=-2" in text and "algorithm.lr=-1" in text


@pytest.mark.parametrize("override", ["train.epochs=abc", "algorithm.not_a_key=1", "algorithm=nope"])
def test_type_and_key_errors_fail_while_composing(override):
    with pytest.raises(Exception) as info:
        compose_raw([override])
    assert any(word in str(info.value) for word in ("abc", "not_a_key", "nope"))


def test_the_registry_says_which_algorithm_runs_on_which_domain():
    from drl.algorithms import (
        ALGORITHMS,
        CONTROL,
        IMAGES,
        algorithm_class,
        algorithms_on,
    )

    assert algorithms_on(CONTROL) == [name for name, entry in ALGORITHMS.items() if entry.control is not None]
    assert "rwr" in algorithms_on(IMAGES) and "rwr" not in algorithms_on(CONTROL) and "dsrl" not in algorithms_on(IMAGES)
    assert algorithm_class("ddpo", IMAGES).__name__ == "DDPO" and algorithm_class("ddpo", CONTROL).__name__ == "PolicyDDPO"
    with pytest.raises(ConfigError, match=f"algorithm=rwr does not run on a control task; use one of {', '.join(algorithms_on(CONTROL))}"):
        compose_config(["env=bandit", "model=diffusion_policy", "scheduler=ddpm", "algorithm=rwr"])
    with pytest.raises(ConfigError, match="algorithm=dsrl runs on control tasks only: choose one, e.g. env=bandit"):
        compose_config(["algorithm=dsrl"])


def test_pre_release_spellings_are_refused_with_one_sentence():
    from drl.compose import compose_config as compose_checked

    with pytest.raises(ConfigError, match="algorithm.eta"):  # q_weight's old name
        compose_checked(["experiment=bandit_diffusion_ql", "algorithm.eta=0.5"])
    with pytest.raises(ConfigError, match="algorithm=pretrain does not run on a control task; use one of bc, ddpo"):
        compose_config(CONTROL[:-1] + ["algorithm=pretrain"])
    assert compose_config(["algorithm=pretrain"]).algorithm.name == "pretrain"  # pretraining an image model


def _experiment_parts(path):
    """(group overrides, included experiment files, body) of an experiment yaml."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path)) or {}
    groups, includes = [], []
    for entry in data.pop("defaults", []):
        (key, value), = entry.items() if isinstance(entry, dict) else [(entry, None)]
        if key.startswith("override /"):
            groups.append(f"{key.removeprefix('override /')}={value}")
        elif not key.startswith("_"):  # another experiment file, relative to this one's group
            includes.append(path.parent / f"{key.split('@')[0]}.yaml")
    return groups, includes, data


def _leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def _repeated_keys(path) -> list[str]:
    """Keys of an experiment whose value is what the config already has without them (its groups and includes)."""
    from omegaconf import OmegaConf

    groups, includes, body = _experiment_parts(path)
    for include in includes:
        more_groups, _, _ = _experiment_parts(include)
        groups = more_groups + groups
    reference = compose_raw(groups)
    for include in includes:
        reference = OmegaConf.merge(reference, OmegaConf.create(_experiment_parts(include)[2]))
    repeated = []
    for key, value in _leaves(body):
        known = OmegaConf.select(reference, key, default="<absent>", throw_on_resolution_failure=False)
        if isinstance(known, (dict, list)) or OmegaConf.is_config(known):
            known = OmegaConf.to_container(known)
        if known == value or (isinstance(value, float) and isinstance(known, (int, float)) and float(known) == value):
            repeated.append(f"{key}={value!r}")
    return repeated


# The reference presets (ref_*) pin every setting of their reference implementation on purpose, defaults
# included: a later change of a drl default must not change what "trl's DDPO" means (docs/guide/coming-from.md).
@pytest.mark.parametrize(
    "path", [p for p in sorted((Path(config_dir()) / "experiment").rglob("*.yaml")) if not p.stem.startswith("ref_")], ids=lambda p: p.stem
)
def test_experiments_are_pure_diffs(path):
    assert _repeated_keys(path) == [], "these keys repeat a default"


def test_the_bandit_experiments_share_one_base():
    root = Path(config_dir()) / "experiment"
    for name in ("bandit_bc", "bandit_ddpo", "bandit_diffusion_ql", "bandit_dsrl"):
        assert _experiment_parts(root / f"{name}.yaml")[1] == [root / "shared" / "bandit.yaml"], name
        cfg = compose_raw([f"experiment={name}"])
        assert (cfg.env.name, cfg.model.name, cfg.model.hidden_dim, cfg.train.batch_size) == ("bandit", "diffusion_policy", 128, 256)
