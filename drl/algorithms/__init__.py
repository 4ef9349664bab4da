"""The algorithm registry: ``algorithm=<name>`` -> its schema and the classes that run it on each domain.

A domain is what a run trains: ``images`` (a text-to-image or text-to-video model) or ``control`` (a
diffusion policy on a gymnasium task, ``env=...``). Classes are named as ``module:Class`` and imported on
first use, so that config validation reads this table without importing torch. An algorithm's facts
(offline, differentiable reward, KL, groups, whether it trains the denoiser, the policy kinds it takes) live on its schema
(drl/algorithms/schemas/). Adding an algorithm: its module, its schema, conf/algorithm/<name>.yaml and one
line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from drl.algorithms.schemas.alignprop import AlignPropConfig
from drl.algorithms.schemas.awm import AWMConfig
from drl.algorithms.schemas.base import AlgorithmConfig
from drl.algorithms.schemas.bc import BCConfig
from drl.algorithms.schemas.ddpo import DDPOConfig
from drl.algorithms.schemas.diffusion_ql import DiffusionQLConfig
from drl.algorithms.schemas.dpo import DPOConfig
from drl.algorithms.schemas.dppo import DPPOConfig
from drl.algorithms.schemas.dsrl import DSRLConfig
from drl.algorithms.schemas.fql import FQLConfig
from drl.algorithms.schemas.nft import NFTConfig
from drl.algorithms.schemas.pretrain import PretrainConfig
from drl.algorithms.schemas.reinflow import ReinFlowConfig
from drl.algorithms.schemas.rwr import RWRConfig

IMAGES, CONTROL = "images", "control"


@dataclass(frozen=True)
class AlgorithmEntry:
    schema: type[AlgorithmConfig]
    """The torch-free config dataclass (fields, checks, facts), stored in Hydra's ConfigStore as schema/algorithm/<name>."""
    images: str | None = None
    """module:Class that trains a text-to-image or text-to-video model; None: not on this domain."""
    control: str | None = None
    """module:Class that trains (or steers) a diffusion policy on a control task; None: not on control tasks."""

    def on(self, domain: str) -> str | None:
        return self.images if domain == IMAGES else self.control


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "pretrain": AlgorithmEntry(PretrainConfig, images="drl.algorithms.pretrain:Pretrain"),
    "bc": AlgorithmEntry(BCConfig, control="drl.algorithms.policy_bc:PolicyBC"),
    "rwr": AlgorithmEntry(RWRConfig, images="drl.algorithms.rwr:RWR"),
    "ddpo": AlgorithmEntry(DDPOConfig, images="drl.algorithms.ddpo:DDPO", control="drl.algorithms.policy_ddpo:PolicyDDPO"),
    "alignprop": AlgorithmEntry(AlignPropConfig, images="drl.algorithms.alignprop:AlignProp"),
    "nft": AlgorithmEntry(NFTConfig, images="drl.algorithms.nft:NFT"),
    "awm": AlgorithmEntry(AWMConfig, images="drl.algorithms.awm:AWM"),
    "dpo": AlgorithmEntry(DPOConfig, images="drl.algorithms.dpo:DPO"),
    "diffusion_ql": AlgorithmEntry(DiffusionQLConfig, control="drl.algorithms.diffusion_ql:DiffusionQL"),
    "dsrl": AlgorithmEntry(DSRLConfig, control="drl.algorithms.dsrl:DSRL"),
    "dppo": AlgorithmEntry(DPPOConfig, control="drl.algorithms.dppo:DPPO"),
    "reinflow": AlgorithmEntry(ReinFlowConfig, control="drl.algorithms.reinflow:ReinFlow"),
    "fql": AlgorithmEntry(FQLConfig, control="drl.algorithms.fql:FQL"),
}


def domain_of(cfg) -> str:
    """The domain a composed config trains on: control tasks name an env."""
    return IMAGES if cfg.env is None else CONTROL


def algorithms_on(domain: str) -> list[str]:
    """The algorithm names that run on ``domain``, in registry order."""
    return [name for name, entry in ALGORITHMS.items() if entry.on(domain) is not None]


def algorithms_where(fact: str) -> list[str]:
    """The algorithm names whose schema has the fact ``fact`` (e.g. takes_kl_coef), in registry order."""
    return [name for name, entry in ALGORITHMS.items() if getattr(entry.schema, fact)]


def domain_problem(name: str, domain: str) -> str | None:
    """Why ``algorithm=name`` cannot run on ``domain`` (one sentence), or None if it can."""
    entry = ALGORITHMS.get(name)
    if entry is not None and entry.on(domain) is not None:
        return None
    if domain == CONTROL:
        return f"algorithm={name} does not run on a control task; use one of {', '.join(algorithms_on(CONTROL))}."
    return (
        f"algorithm={name} runs on control tasks only: choose one, e.g. env=bandit (or use an experiment=bandit_* config); "
        f"text-to-image and video models take one of {', '.join(algorithms_on(IMAGES))}."
    )


def algorithm_class(name: str, domain: str) -> type:
    """The class that runs ``algorithm=name`` on ``domain`` (imported now)."""
    target = ALGORITHMS[name].on(domain)
    if target is None:
        raise ValueError(domain_problem(name, domain))
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
