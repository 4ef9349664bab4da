"""``drl-train <overrides> --plan``: compose the run's config as drl-train would, print its memory plan, exit."""

from __future__ import annotations

from drl.errors import ConfigError, fail


def plan_main(overrides: list[str]) -> None:
    from drl.compose import compose_config
    from drl.plan.budget import memory_plan
    from drl.plan.report import advise, format_plan

    try:
        cfg = compose_config(overrides)
    except ConfigError as e:
        fail(f"invalid config: {e}")
    try:
        plan = memory_plan(cfg)
        print(format_plan(plan, advise(cfg, plan)))
    except ConfigError as e:  # PlanError among them: a model or option the plan cannot size
        fail(f"drl-train --plan: {e}")
