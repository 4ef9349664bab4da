"""Plug-in rewards: a reward term that names a factory in the user's own code (Hydra's ``_target_``).

    reward:
      terms:
        sharp:                                  # the term's name, logged as reward/sharp
          _target_: my_rewards.sharpness        # module.attribute, importable (PYTHONPATH)
          weight: 1.0                           # flags, read by drl ...
          differentiable: true
          scale: 2.0                            # ... and every other key is a keyword argument of the factory

The factory (a function or a class) is called once, with those keyword arguments, ``device=``
and any flag when it takes a parameter of that name, and returns the scoring callable ``fn(samples, prompts, metadata)`` that keeps
the contract of drl.rewards.base. Every mistake becomes a RewardError naming the term and the fix.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

import torch

from drl.errors import RewardError
from drl.rewards.base import Reward

# Keys of a plug-in term that drl reads (with their defaults); the others go to the factory.
FLAGS: dict[str, Any] = {
    "weight": 1.0, "differentiable": False, "video": False, "frames": 0, "groupwise": False, "per_sample": True, "pairwise": False,
    "space": "pixel",
}  # fmt: skip


def is_plugin(spec: Any) -> bool:
    return isinstance(spec, Mapping) and "_target_" in spec


def import_target(name: str, target: str):
    """``package.module.attribute`` -> the attribute; errors say what to put on PYTHONPATH."""
    module_name, _, attribute = str(target).rpartition(".")
    if not module_name:
        raise RewardError(f"reward {name!r}: _target_={target!r} must be module.attribute, e.g. my_rewards.sharpness.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise RewardError(
            f"reward {name!r}: cannot import {module_name!r} for _target_={target} ({e}); put the directory that holds "
            f"{module_name.split('.')[0]}/ or {module_name.split('.')[0]}.py on PYTHONPATH (PYTHONPATH=/path/to/dir drl-train ...)."
        ) from None
    except Exception as e:  # the user's module itself failed while importing
        raise RewardError(f"reward {name!r}: importing {module_name!r} failed with {type(e).__name__}: {e}") from None
    if not hasattr(module, attribute):
        raise RewardError(f"reward {name!r}: module {module_name!r} ({module.__file__}) has no {attribute!r}; check _target_={target}.")
    return getattr(module, attribute)


def build_plugin(name: str, spec: Mapping, device: torch.device) -> Reward:
    """The Reward of a ``{_target_: ..., <flags>, <kwargs>}`` term, its factory called once."""
    target = str(spec["_target_"])
    flags = {key: spec.get(key, default) for key, default in FLAGS.items()}
    kwargs = {key: value for key, value in spec.items() if key not in FLAGS and key != "_target_"}
    factory = import_target(name, target)
    if not callable(factory):
        raise RewardError(f"reward {name!r}: {target} is a {type(factory).__name__}, not a function or class that builds the reward.")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        signature = None
    if signature is not None:
        if "device" in signature.parameters and "device" not in kwargs:
            kwargs["device"] = device
        kwargs.update({key: flags[key] for key in FLAGS if key in signature.parameters and key not in kwargs})  # e.g. groupwise
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            raise RewardError(
                f"reward {name!r}: {target}{signature} cannot be called with {sorted(kwargs)} ({e}); "
                f"set its arguments as reward.terms.{name}.<argument>=<value>."
            ) from None
    try:
        fn = factory(**kwargs)
    except RewardError:
        raise
    except Exception as e:
        raise RewardError(f"reward {name!r}: building it with {target}(...) failed with {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise RewardError(
            f"reward {name!r}: {target}(...) returned a {type(fn).__name__}; it must return the scoring function "
            "fn(images, prompts, metadata) -> scores [B] (or be a class with __call__)."
        )
    return Reward(
        name,
        fn,
        differentiable=bool(flags["differentiable"]),
        video=bool(flags["video"]),
        frames=int(flags["frames"]),
        groupwise=bool(flags["groupwise"]),
        per_sample=bool(flags["per_sample"]),
        pairwise=bool(flags["pairwise"]),
        space=str(flags["space"]),
        plugin=target,
    )


def dry_call(
    reward: Reward, sample_shape: tuple[int, ...], prompts: list[str], device: torch.device, needs_grad: bool, group_size: int,
    metadata: list[dict] | None = None, latent_shape: tuple[int, ...] | None = None,
) -> None:  # fmt: skip
    """Score a tiny random batch once before training, so a broken reward fails in seconds, not after an epoch.

    sample_shape: one sample's shape, (3, H, W) or (F, 3, H, W); latent_shape: one x_0 latent's (a latent
    reward gets those, standard normal). needs_grad: the algorithm backpropagates the reward (AlignProp), so
    a reward declared differentiable must return scores with a gradient.
    metadata: the prompts' (an editing task's source images), cycled as the prompts are; default {} each.
    """
    n = max(2, group_size if reward.groupwise else 2)
    generator = torch.Generator().manual_seed(0)
    if reward.space == "latent":
        if latent_shape is None:
            raise RewardError(f"reward {reward.name!r} reads latents (space: latent), and this model has none to give it.")
        samples = torch.randn((n, *latent_shape), generator=generator).to(device)  # [n, C, h, w]
    else:
        samples = torch.rand((n, *sample_shape), generator=generator).to(device)  # [n, 3, H, W] or [n, F, 3, H, W]
    samples.requires_grad_(needs_grad)
    batch_prompts = [prompts[0] if reward.groupwise else prompts[k % len(prompts)] for k in range(n)]
    with torch.enable_grad() if needs_grad else torch.no_grad():
        try:
            batch_metadata = [{} if not metadata else metadata[0 if reward.groupwise else k % len(metadata)] for k in range(n)]
            scores, _ = reward.score(samples, batch_prompts, batch_metadata, group_size=n)
        except RewardError:
            raise
        except Exception as e:
            raise RewardError(
                f"reward {reward.name!r} ({reward.plugin}) failed on a test batch of {n} random "
                f"{'latents' if reward.space == 'latent' else 'clips' if len(sample_shape) == 4 else 'images'} {list(samples.shape)}: {type(e).__name__}: {e}"
            ) from None
    if needs_grad and reward.differentiable and not scores.requires_grad:
        raise RewardError(
            f"reward {reward.name!r} is declared differentiable but its scores carry no gradient back to the images, "
            "which algorithm=alignprop needs: compute them with torch operations on the images (no .item(), .numpy() or "
            "torch.no_grad()), or set differentiable: false and train with algorithm=ddpo."
        )


def dry_call_plugins(
    reward, sample_shape: tuple[int, ...], prompts: list[str], device: torch.device, needs_grad: bool,
    metadata: list[dict] | None = None, latent_shape: tuple[int, ...] | None = None,
) -> None:  # fmt: skip
    """dry_call every plug-in term, monitor and evaluation reward of a WeightedReward (built-ins are trusted)."""
    for r in reward.rewards + reward.monitors + reward.eval_rewards:
        if r.plugin:
            dry_call(r, sample_shape, prompts, device, needs_grad and r in reward.rewards, reward.group_size, metadata, latent_shape)
