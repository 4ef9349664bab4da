"""The start of a run: which checkpoint it continues from, whether it may, and the state it continues with.

train() builds the run, then asks ``start_run`` once for the state its loop starts from:

    find      the checkpoint (rank 0 chooses; a damaged last.pt is set aside for previous.pt)
    check     its fingerprint against this config (refused, or changes accepted with resume_changes=allow)
    load      the trained weights and the algorithm's state, then this config's optimizer settings
    restore   every rank's random streams (a new seed starts new ones)
    truncate  metrics.jsonl after the checkpoint's epoch (all of it for a new run)

and ``save_run`` writes that state at the end of an epoch: the checkpoint's contents (CONTENTS) are
written and read here alone; drl.checkpoint only stores and loads the file.

A checkpoint records the run's *fingerprint*: the settings that continuing depends on. Resuming
compares it with the new config:

- FIXED keys (the algorithm, the model and how it is fine-tuned, the world size, the control task)
  decide what the saved weights and optimizer state mean: a difference is always refused.
- Every other fingerprint key (the algorithm's hyperparameters, seed, scheduler, reward, prompts)
  is refused unless ``resume_changes=allow``: then the new values are used (the optimizer's
  learning rate etc. are set to them, a new seed reseeds the random streams) and each change is
  printed and written to <run dir>/resume_changes.jsonl.
- The rest (train.epochs, save_every, logging, threads, device) may change freely: extending a run
  by raising train.epochs is the common case.

A damaged last.pt is reported and set aside as last.pt.damaged; the run continues from
previous.pt (the save before it). drl keeps those two, so one bad file never stops a run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from drl import distributed
from drl.checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    find_checkpoint,
    load_checkpoint,
    load_trainable_state,
    save_checkpoint,
    trainable_state,
)
from drl.config import Config
from drl.errors import CheckpointError, ConfigError, ResumeRefused, RunError, UnsafeCheckpointError

if TYPE_CHECKING:
    from drl.algorithms.base import Algorithm
    from drl.logging import RunLogger

FIXED = (
    "algorithm.name",
    "model.path",
    "model.family",
    "model.kind",
    "model.from_scratch",
    "model.finetune",
    "model.lora_rank",
    "model.lora_alpha",
    "model.lora_targets",
    "world_size",
    "env.id",
)
FIND = "find"  # train(resume_point=FIND): look for the checkpoint itself
CHANGES_LOG = "resume_changes.jsonl"  # one line per accepted resume_changes=allow rerun
CONTENTS = ("epoch", "weights", "algorithm", "ranks", "nonfinite_in_a_row", "config")
"""What a checkpoint holds (save_run): the last epoch done, the trained weights by module, the algorithm's
state_dict, each rank's random streams, the non-finite epochs in a row, and the fingerprint."""


def fingerprint(cfg: Config, world_size: int) -> dict:
    """The settings a checkpoint can only be continued under, flattened to dotted keys (plain values only)."""
    model = {k: getattr(cfg.model, k) for k in ("path", "family", "kind", "from_scratch", "finetune", "lora_rank", "lora_alpha", "lora_targets", "resolution", "num_frames")}
    tree = {
        "algorithm": asdict(cfg.algorithm),
        "model": model,
        "scheduler": asdict(cfg.scheduler),
        "reward": {"terms": asdict(cfg.reward)["terms"]},
        "prompts": asdict(cfg.prompts),
        "env": asdict(cfg.env) if cfg.env is not None else None,
        "seed": cfg.seed,
        "world_size": world_size,
    }
    return _flatten(json.loads(json.dumps(tree, default=str)))  # plain values only: the checkpoint loads with weights_only


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: list(tree) if isinstance(tree, tuple) else tree}


def differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, checkpoint's value, this run's value) for every key both record with different values.

    A key only one side has came with another drl version (a field added or removed): not a change of the run.
    """
    return [(k, saved[k], current[k]) for k in sorted(saved.keys() & current.keys()) if saved[k] != current[k]]


def _listed(diffs) -> str:
    return ", ".join(f"{k} ({old!r} -> {new!r})" for k, old, new in diffs)


def check_changes(saved: dict, current: dict, allow: bool, path: Path) -> list[tuple[str, object, object]]:
    """The accepted changes (empty without resume_changes=allow); ResumeRefused when they may not be made."""
    diffs = differences(saved, current)
    fixed = [d for d in diffs if d[0] in FIXED]
    if fixed:
        raise ResumeRefused(
            f"Cannot continue {path} with a different {_listed(fixed)}: its weights and optimizer state belong to "
            "the old setting; rerun with the checkpoint's values, or start a new run (hydra.run.dir=...) from its exported model."
        )
    if diffs and not allow:
        raise ResumeRefused(
            f"This config differs from the one {path} was trained with in {_listed(diffs)}: rerun with the checkpoint's "
            "values, or add resume_changes=allow to continue with the new ones."
        )
    return diffs


@dataclass
class ResumePoint:
    """A checkpoint this run continues from."""

    path: Path
    state: dict
    changes: list = field(default_factory=list)
    """(key, old, new) accepted under resume_changes=allow."""
    notes: list = field(default_factory=list)
    """What a person should know (a damaged checkpoint set aside)."""

    @property
    def reseeded(self) -> bool:
        return any(k == "seed" for k, _, _ in self.changes)


def choose_checkpoint(run_dir: Path, resume: str | None) -> tuple[Path | None, list[str], dict | None]:
    """Rank 0: the newest usable checkpoint, notes, and its state. An explicit ``resume`` is used or refused
    as it is; the run dir's own damaged last.pt is set aside for previous.pt."""
    if resume:
        path = find_checkpoint(run_dir, resume)
        return path, [], load_checkpoint(path)  # refused here, with the reason, if it cannot be used
    directory = run_dir / "checkpoints"
    last, previous = directory / CHECKPOINT_NAME, directory / PREVIOUS_NAME
    damaged: list[str] = []
    for path in (last, previous):
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        notes = []
        if path == previous and last.is_file():  # last.pt is damaged: keep it for inspection, out of the rotation
            aside = last.with_name(CHECKPOINT_NAME + ".damaged")
            last.replace(aside)
            notes.append(f"{damaged[0]} It was moved to {aside.name}; continuing from {PREVIOUS_NAME}, the checkpoint before it.")
        return path, notes, state
    if damaged:
        raise CheckpointError(
            " ".join(damaged) + f" No usable checkpoint is left: move {directory} aside to start the run over, "
            "or resume=<another checkpoint>."
        )
    return None, [], None


def find_resume_point(cfg: Config, run_dir: Path) -> ResumePoint | None:
    """Every rank: the checkpoint to continue from (rank 0 chooses), checked against this config."""
    chosen: tuple = (None, [], None)
    state = None
    if distributed.is_main():
        try:
            path, notes, state = choose_checkpoint(run_dir, cfg.resume)
            chosen = (path, notes, None)
        except RunError as e:
            chosen = (None, [], e)
    path, notes, error = distributed.broadcast_object(chosen)  # the path only: every rank loads the state itself
    if error is not None:
        raise error
    if path is None:
        return None
    state = state if state is not None else load_checkpoint(path)
    missing = [key for key in CONTENTS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} cannot be continued: it lacks {', '.join(missing)} (a checkpoint of another drl version); "
            "start a new run (hydra.run.dir=...), or load its weights with drl-eval or scripts/sample_grid.py."
        )
    allow = cfg.resume_changes == "allow"
    changes = check_changes(state["config"], fingerprint(cfg, distributed.world_size()), allow, path)
    return ResumePoint(Path(path), state, changes, notes)


@dataclass
class StartState:
    """What train()'s loop starts from (start_run)."""

    epoch: int
    """The first epoch to run: 0 for a new run, the checkpoint's epoch + 1 for a resumed one."""
    nonfinite_in_a_row: int
    """Epochs in a row with NaN/inf rewards or loss, as the checkpoint left the count."""


def start_run(
    cfg: Config,
    run_dir: Path,
    modules: dict[str, torch.nn.Module],
    algorithm: Algorithm,
    generator: torch.Generator,
    logger: RunLogger,
    point: ResumePoint | None | str = FIND,
) -> StartState:
    """Every rank, once the run is built: find -> check -> load -> restore RNGs -> truncate metrics.

    ``modules``: the trained modules by name (the domain hooks' trainable_modules()). ``point``: the
    checkpoint drl-train found before writing anything (None: start afresh), or FIND it here.
    """
    if point is FIND:
        point = find_resume_point(cfg, run_dir)
    if point is None:
        logger.truncate_after(-1)  # a new run keeps no epoch of an earlier one
        return StartState(0, 0)
    state = point.state
    load_trainable_state(modules, state["weights"])
    settings = optimizer_settings(algorithm)  # this config's lr etc. (the same unless resume_changes=allow)
    algorithm.load_state_dict(state["algorithm"])
    apply_optimizer_settings(algorithm, settings)
    if not point.reseeded:  # a new seed (resume_changes=allow) starts new random streams
        restore_rank_rng(state, generator, algorithm)
    start = StartState(state["epoch"] + 1, state["nonfinite_in_a_row"])
    if distributed.is_main():
        for note in point.notes:
            tqdm.write(note)
        log_changes(run_dir, point)
        tqdm.write(f"Resuming from {point.path} at epoch {start.epoch}.")
    logger.truncate_after(state["epoch"])  # no epoch past the checkpoint: they are run again
    return start


def save_run(
    cfg: Config,
    run_dir: Path,
    epoch: int,
    modules: dict[str, torch.nn.Module],
    algorithm: Algorithm,
    generator: torch.Generator,
    nonfinite_in_a_row: int,
) -> None:
    """Every rank, after ``epoch``: the checkpoint start_run continues from (CONTENTS); rank 0 writes it."""
    ranks = distributed.gather_objects(rank_rng_state(generator, algorithm))  # collective: every rank calls it
    state = {
        "epoch": epoch,
        "weights": trainable_state(modules),
        "algorithm": algorithm.state_dict(),
        "ranks": ranks,
        "nonfinite_in_a_row": nonfinite_in_a_row,
        "config": fingerprint(cfg, distributed.world_size()),  # what resuming must match
    }
    if distributed.is_main():
        save_checkpoint(run_dir / "checkpoints", state)


def rank_rng_state(generator: torch.Generator, algorithm: Algorithm) -> dict:
    """This rank's random streams: sampling (prompts, noise), the update's, and torch's global one."""
    return {"generator": generator.get_state(), "algorithm": algorithm.generator.get_state(), "torch": torch.get_rng_state()}


def restore_rank_rng(state: dict, generator: torch.Generator, algorithm: Algorithm) -> None:
    """Each rank continues its own streams; a checkpoint of another world size cannot be continued exactly."""
    ranks = state["ranks"]
    if len(ranks) != distributed.world_size():
        raise ConfigError(
            f"The checkpoint was written by {len(ranks)} process(es) and this run has {distributed.world_size()}: "
            f"resume with hardware.num_processes={len(ranks)} (per-rank random streams cannot be split or merged)."
        )
    mine = ranks[distributed.rank()]
    generator.set_state(mine["generator"])
    algorithm.generator.set_state(mine["algorithm"])
    torch.set_rng_state(mine["torch"])


def log_changes(run_dir: Path, point: ResumePoint) -> None:
    """Rank 0: the accepted changes, to the console and to resume_changes.jsonl (the metrics' epochs continue)."""
    if not point.changes:
        return
    print(f"Continuing {point.path} (epoch {point.state['epoch']}) with new settings: {_listed(point.changes)}.", flush=True)
    record = {"resumed_after_epoch": point.state["epoch"], "changes": {k: {"old": old, "new": new} for k, old, new in point.changes}}
    with (run_dir / CHANGES_LOG).open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


# ----------------------------------------------------------------- optimizer settings
def _optimizers(algorithm) -> list[tuple[torch.optim.Optimizer, object]]:
    """Every optimizer an algorithm holds (actor, critics, temperature...) with its LR scheduler, if any."""
    found = [v for v in vars(algorithm).values() if isinstance(v, torch.optim.Optimizer)]
    schedulers = [v for v in vars(algorithm).values() if isinstance(v, torch.optim.lr_scheduler.LRScheduler)]
    return [(opt, next((s for s in schedulers if s.optimizer is opt), None)) for opt in found]


def optimizer_settings(algorithm) -> list[list[dict]]:
    """This config's optimizer hyperparameters (lr, betas, weight decay...), taken before a checkpoint is loaded."""
    return [[{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups] for opt, _ in _optimizers(algorithm)]


def apply_optimizer_settings(algorithm, settings: list[list[dict]]) -> None:
    """After load_state_dict: the config's hyperparameters replace the checkpoint's (equal unless resume_changes=allow).

    The learning rate keeps its place in the schedule: lr = loaded lr * new base lr / old base lr.
    """
    for (opt, scheduler), groups in zip(_optimizers(algorithm), settings):
        for k, (group, fresh) in enumerate(zip(opt.param_groups, groups)):
            base_old, base_new = group.get("initial_lr", group["lr"]), fresh.get("initial_lr", fresh["lr"])
            lr = group["lr"] * (base_new / base_old) if scheduler is not None and base_old else fresh["lr"]
            group.update({**fresh, "lr": lr})
            if scheduler is not None:
                scheduler.base_lrs[k] = base_new
