"""Range checks that turn a config value into one sentence when it is out of range (torch-free).

Every schema check appends to a list of problems, so that a config's faults are all reported at once.
"""

from __future__ import annotations

from typing import Any


def choice(problems: list[str], key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        problems.append(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}.")


def positive(problems: list[str], key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}.")


def fraction(problems: list[str], key: str, value: float, closed_low: bool = False) -> None:
    if not ((0 <= value if closed_low else 0 < value) and value <= 1):
        problems.append(f"{key}={value} must be in {'[0' if closed_low else '(0'}, 1].")


def all_positive(problems: list[str], obj: Any, prefix: str, keys: tuple[str, ...], allow_zero: bool = False) -> None:
    """positive() on each of ``obj``'s attributes ``keys``, named ``<prefix>.<key>``."""
    for key in keys:
        positive(problems, f"{prefix}.{key}", getattr(obj, key), allow_zero)


def scheduler_noise_problems(s) -> list[str]:
    """scheduler.sde_type: one of the flow noise forms, and only on a flow scheduler."""
    p: list[str] = []
    choice(p, "scheduler.sde_type", s.sde_type, ("flow_grpo", "cps"))
    if s.sde_type == "cps" and s.kind != "flow":
        p.append(f"scheduler.sde_type=cps is a noise form of the flow sampler (scheduler=flow); scheduler.kind={s.kind} has its own noise.")
    return p
