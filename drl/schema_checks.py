"""Checks that hold for every schema in drl/config.py, whatever fields it has: no unknown keys, no NaN/inf.

Hydra's ``+key=value`` adds a key that the schema does not have (Hydra even suggests it for a typo),
and OmegaConf.to_object drops it silently; NaN passes every range check (it fails no comparison).
Both walks are generic over the dataclasses, so fields added later are covered without new code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def unknown_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted names of keys in a composed config that its dataclass schema does not declare."""
    found: list[str] = []
    if isinstance(node, ListConfig):
        for k in range(len(node)):
            found += unknown_keys(node._get_node(k), f"{prefix}[{k}]")
        return found
    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
        return found
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        name = f"{prefix}.{key}" if prefix else str(key)
        if declared is not None and key not in declared:
            found.append(name)
        else:
            found += unknown_keys(node._get_node(key), name)
    return found


def non_finite(value: Any, prefix: str = "") -> list[str]:
    """Dotted names of the float values (fields, dict values, list items) that are NaN or infinite."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [prefix]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        return [name for k, item in enumerate(value) for name in non_finite(item, f"{prefix}[{k}]")]
    else:
        return []
    return [name for key, item in items for name in non_finite(item, f"{prefix}.{key}" if prefix else str(key))]


def schema_problems(raw: DictConfig, obj: Any) -> list[str]:
    """Sentences for the unknown keys of the composed ``raw`` and the non-finite numbers of its typed ``obj``."""
    problems = [
        f"{name} is not a key of drl's config (a '+' override adds keys that nothing reads): check its spelling (`drl-train <your overrides> --cfg job` prints every key)."
        for name in unknown_keys(raw)
    ]
    problems += [f"{name} must be a finite number (got NaN or inf)." for name in non_finite(obj)]
    return problems
