"""Compose configs the way drl-train does, shrunk to CPU-test size."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from drl.cli import config_dir
from drl.config import Config, register_configs, validate

os.environ.setdefault("WANDB_SILENT", "true")

# A run of seconds: few samples, few steps, no W&B.
TINY = [
    "train.epochs=2",
    "train.samples_per_epoch=8",
    "train.batch_size=8",
    "train.grid_size=4",
    "train.eval_size=6",
    "scheduler.num_steps=4",
    "logger=none",
]


def compose_raw(overrides: list[str] | None = None):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def compose_config(overrides: list[str] | None = None, tiny: bool = True) -> Config:
    return validate(compose_raw((TINY if tiny else []) + list(overrides or [])))


@pytest.fixture
def tiny_config():
    return compose_config


@pytest.fixture(scope="session")
def random_toy_model(tmp_path_factory) -> str:
    """A randomly initialised toy model saved in diffusers' layout (fast; independent of shipped weights)."""
    from drl.models.toy import build_toy_t2i

    directory = tmp_path_factory.mktemp("toy_model")
    build_toy_t2i(seed=0).save_pretrained(directory)
    return str(directory)
