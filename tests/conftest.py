"""Compose configs the way drl-train does, shrunk to CPU-test size."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from drl.compose import config_dir
from drl.config import Config, register_configs, validate

os.environ.setdefault("WANDB_SILENT", "true")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` runs N workers side by side: one torch thread each, for this process and every drl-train it
    # starts (hardware.num_threads=0 leaves torch at OMP_NUM_THREADS), so that N workers do not spin on N^2 threads.
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

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



def load_script(name: str):
    """scripts/<name>.py imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_records(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per logged epoch."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def train_toy_alignment(run_dir, model: str, *overrides: str) -> float:
    """A tiny in-process run of the toy model at ``model``, rewarded by toy_alignment."""
    from drl.train import train

    return train(compose_config([f"model.path={model}", "reward=toy_alignment", "hardware.num_threads=1", *overrides]), run_dir)


@pytest.fixture
def tiny_config():
    return compose_config


@pytest.fixture
def one_torch_thread():
    """For contexts built outside train() (which would set hardware.num_threads=1): on a shared CPU, more threads than
    free cores make a tiny denoiser call many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def random_toy_model(tmp_path_factory) -> str:
    """A randomly initialised toy model saved in diffusers' layout (fast; independent of shipped weights)."""
    from drl.models.toy import build_toy_t2i

    directory = tmp_path_factory.mktemp("toy_model")
    build_toy_t2i(seed=0).save_pretrained(directory)
    return str(directory)


# A tiny run on the tiny SD-family components (tiny_dirs): 16 px images (8 px latents), 2 denoising steps, 4 samples.
SMALL = [
    "hardware.num_threads=1",
    "model.resolution=16",
    "scheduler.num_steps=2",
    "train.samples_per_epoch=4",
    "train.batch_size=4",
    "train.grid_size=2",
]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny random SD1.x, SDXL and SD3 (flow) pipelines saved in diffusers' layout, by family name."""
    from drl.testing.tiny import build_tiny_sd, build_tiny_sd3, build_tiny_sdxl

    root = tmp_path_factory.mktemp("tiny_models")
    builders = {"sd15": build_tiny_sd, "sdxl": build_tiny_sdxl, "sd3": build_tiny_sd3}
    for name, build in builders.items():
        build(seed=0).save_pretrained(root / name)
    return {name: str(root / name) for name in builders}


def tiny_model_overrides(name: str, tiny_dirs: dict[str, str], *extra: str) -> list[str]:
    """Overrides that run family ``name`` from tiny_dirs at SMALL size (flow models take scheduler=flow)."""
    scheduler = ["scheduler=flow"] if name == "sd3" else []
    return [f"model={name}", f"model.path={tiny_dirs[name]}", *scheduler, *SMALL, *extra]


# DRL_TEST_CPU_REPORT=path writes each test's CPU seconds (this process and the subprocesses it waited for: user +
# sys, setup to teardown) as JSON lines. CPU time, unlike wall time, holds on a shared machine: it is how to find
# the tests that make the default run slow (docs/guide/development.md).
_CPU_REPORT = os.environ.get("DRL_TEST_CPU_REPORT")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_REPORT:
        yield
        return
    import resource
    import time

    def cpu_seconds() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    cpu, wall = cpu_seconds(), time.perf_counter()
    yield
    with open(_CPU_REPORT, "a") as report:
        report.write(json.dumps({"test": item.nodeid, "cpu_s": round(cpu_seconds() - cpu, 2), "wall_s": round(time.perf_counter() - wall, 2)}) + "\n")


def save_tiny_builds(root: Path, names, **build_options) -> dict[str, str]:
    """drl.testing.tiny's builders for ``names``, each saved under root/<name>: name -> directory."""
    from drl.testing.tiny import BUILDERS

    for name in names:
        BUILDERS[name](seed=0, **build_options).save_pretrained(root / name)
    return {name: str(root / name) for name in names}


def assert_trained_two_epochs(run_dir: Path, cfg, negative_reward: bool = False) -> None:
    """A two-epoch run of a LoRA-adapted image model: finite loss and reward each epoch, moved from its base, on-policy
    ratio 1 at DDPO's first inner step, and the LoRA exported. ``negative_reward``: the reward is a distance to each
    prompt's source image (image-conditioned runs), so every epoch's mean and every "after" evaluation is below 0."""
    records = read_records(run_dir)
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) and math.isfinite(r["reward_mean"]) for r in records)
    if negative_reward:
        assert all(r["reward_mean"] < 0 for r in records)
        evaluation = json.loads((run_dir / "eval.json").read_text())
        assert len(evaluation["before"]) == len(evaluation["after"]) == cfg.train.eval_size
        assert all(v < 0 for v in evaluation["after"])
    assert records[-1]["drift_from_base"] > 0
    if cfg.algorithm.name == "ddpo":
        assert records[0]["train/ratio_dev_first"] <= 1e-5
    assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()


def lora_outputs(pipe, prompt_kw: dict, *loads: tuple[str, dict]) -> list:
    """A diffusers pipeline's output for "a cat" (seed 0, ``prompt_kw``) before and after each LoRA load in turn
    (``loads``: (directory, load_lora_weights keywords)); the images, or a video pipeline's frames."""

    def generate():
        out = pipe("a cat", generator=torch.Generator().manual_seed(0), output_type="pt", **prompt_kw)
        return out.frames if hasattr(out, "frames") else out.images

    outputs = [generate()]
    for directory, kw in loads:
        pipe.load_lora_weights(directory, **kw)
        outputs.append(generate())
    return outputs
