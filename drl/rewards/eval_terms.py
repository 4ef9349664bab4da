"""Evaluation-only rewards (reward.eval_terms) in eval.json: per-sample scores before and after
training on the fixed evaluation batch, and each one's paired gain, beside the training reward's."""

from __future__ import annotations

import torch

from drl.rewards import EVAL_PREFIX


def paired_gain(before: list[float], after: list[float]) -> dict[str, float]:
    """Mean and standard error of after - before on the same prompts and noise."""
    gain = torch.tensor(after, dtype=torch.float64) - torch.tensor(before, dtype=torch.float64)  # [N]
    return {"before": sum(before) / len(before), "after": sum(after) / len(after), "gain": float(gain.mean()), "gain_se": float(gain.std() / len(gain) ** 0.5)}


def record_eval_terms(record: dict, stage: str, reward_terms: dict[str, torch.Tensor], logger, epoch: int) -> None:
    """Move the eval:<name> scores of ``stage`` (before | after) into record["eval_terms"]; once both stages
    are there, add each one's paired gain and log it as eval/<name>_gain."""
    scores = {k.removeprefix(EVAL_PREFIX): v for k, v in reward_terms.items() if k.startswith(EVAL_PREFIX)}
    if not scores:
        return
    section = record.setdefault("eval_terms", {})
    section[stage] = {name: [float(x) for x in v] for name, v in scores.items()}
    if "before" in section and "after" in section:
        section["gain"] = {name: paired_gain(section["before"][name], section["after"][name]) for name in section["after"] if name in section["before"] and len(section["after"][name]) > 1}
        logger.log_summary({f"eval/{name}_gain": g["gain"] for name, g in section["gain"].items()}, epoch)
