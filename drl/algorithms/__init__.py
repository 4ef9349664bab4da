"""The algorithm registry: which class runs ``algorithm=<name>`` on which domain.

A domain is what a run trains: ``images`` (a text-to-image or text-to-video model) or
``control`` (a diffusion policy on a gymnasium task, ``env=...``). Classes are named as
``module:Class`` and imported on first use, so that config validation (drl/config.py) reads
this table without importing torch. Adding an algorithm is one line here (plus its config schema).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

IMAGES, CONTROL = "images", "control"


@dataclass(frozen=True)
class AlgorithmEntry:
    images: str | None = None
    """module:Class that trains a text-to-image or text-to-video model; None: not on this domain."""
    control: str | None = None
    """module:Class that trains (or steers) a diffusion policy on a control task; None: not on control tasks."""
    offline: bool = False
    """On control tasks: learns from a fixed dataset (env.dataset), which its collector reads, instead of acting."""

    def on(self, domain: str) -> str | None:
        return self.images if domain == IMAGES else self.control


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "pretrain": AlgorithmEntry(images="drl.algorithms.pretrain:Pretrain"),
    "bc": AlgorithmEntry(control="drl.algorithms.policy_bc:PolicyBC", offline=True),
    "rwr": AlgorithmEntry(images="drl.algorithms.rwr:RWR"),
    "ddpo": AlgorithmEntry(images="drl.algorithms.ddpo:DDPO", control="drl.algorithms.policy_ddpo:PolicyDDPO"),
    "alignprop": AlgorithmEntry(images="drl.algorithms.alignprop:AlignProp"),
    "nft": AlgorithmEntry(images="drl.algorithms.nft:NFT"),
    "dpo": AlgorithmEntry(images="drl.algorithms.dpo:DPO"),
    "diffusion_ql": AlgorithmEntry(control="drl.algorithms.diffusion_ql:DiffusionQL", offline=True),
    "dsrl": AlgorithmEntry(control="drl.algorithms.dsrl:DSRL"),
    "dppo": AlgorithmEntry(control="drl.algorithms.dppo:DPPO"),
}


def domain_of(cfg) -> str:
    """The domain a composed config trains on: control tasks name an env."""
    return IMAGES if cfg.env is None else CONTROL


def algorithms_on(domain: str) -> list[str]:
    """The algorithm names that run on ``domain``, in registry order."""
    return [name for name, entry in ALGORITHMS.items() if entry.on(domain) is not None]


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
