"""drl-train: compose the config, validate it, train, clean up."""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from drl.compose import config_dir
from drl.config import register_configs, validate
from drl.errors import ConfigError, NonFiniteError, Preempted, RunError, fail, user_message


PREEMPTED_EXIT_CODE = 143  # like a process ended by SIGTERM; stopped on a signal after checkpointing: rerun (or the requeued job) resumes
INTERRUPTED_EXIT_CODE = 130  # like a process ended by SIGINT: Ctrl-C twice
NONFINITE_EXIT_CODE = 3


def run(cfg: DictConfig) -> float:
    """The Hydra task: returns the final mean reward, the objective of sweeps.

    The one error path: a mistake in the user's input or environment (drl.errors.user_message) ends
    the run with one sentence and a non-zero exit; anything else is a bug and keeps its traceback.
    """
    try:
        config = validate(cfg)
    except ConfigError as e:
        fail(f"invalid config: {e}")
    try:
        return _run(cfg, config)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        fail("interrupted (Ctrl-C twice): stopped at once; the last checkpoint written is kept, rerun the same command to resume.", INTERRUPTED_EXIT_CODE)
    except Preempted as e:
        fail(str(e), code=PREEMPTED_EXIT_CODE)
    except NonFiniteError as e:
        fail(str(e), code=NONFINITE_EXIT_CODE)
    except Exception as e:
        message = user_message(e)
        if message is None:
            traceback.print_exc()
            fail("this is a bug in drl, not a mistake in your input: please report it with the traceback above.", code=1)
        fail(message)


def _run(cfg: DictConfig, config) -> float:
    from drl import distributed
    from drl.resume import find_resume_point

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if distributed.needs_relaunch(config.hardware):
        return relaunched(config, run_dir)
    distributed.setup(config.hardware)
    run_dir = distributed.broadcast_object(run_dir)  # ranks started apart may stamp different times
    with owned(run_dir):
        point = find_resume_point(config, run_dir)  # refuses a changed config before anything is written
        if distributed.is_main():
            record_config(run_dir, cfg, hydra_cfg)
        from drl.train import train  # heavy imports once the run is accepted

        return train(config, run_dir, OmegaConf.to_container(cfg, resolve=True), resume_point=point)


@contextlib.contextmanager
def owned(run_dir: Path):
    """Rank 0 holds the run directory's lock for the run (drl.runlock); every rank stops if it cannot."""
    from drl import distributed
    from drl.checkpoint import remove_stale_temporaries
    from drl.runlock import RunLock

    lock, error = None, None
    if distributed.is_main():
        try:
            lock = RunLock(run_dir).acquire()
        except Exception as e:  # raised below, on every rank at once
            error = e
    if distributed.any_rank(error is not None):
        raise error if error is not None else RunError("rank 0 could not lock the run directory.")
    try:
        if lock is not None:
            if lock.previous_owner:
                owner = lock.previous_owner
                print(f"The run directory's lock of process {owner.get('pid')} on {owner.get('host')} was stale (it ended without releasing it); taken over.")
            removed = remove_stale_temporaries(run_dir / "checkpoints")
            if removed:
                print(f"Removed {removed} half-written checkpoint file(s) (.tmp-*.pt) of an interrupted run.")
        yield
    finally:
        if lock is not None:
            lock.release()


def record_config(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig) -> Path:
    """Write .hydra/ (config.yaml, hydra.yaml, overrides.yaml) as Hydra would, once the run is accepted.

    conf/hydra/default.yaml sets hydra.output_subdir=null, so Hydra writes nothing before the task: a rerun
    refused (a locked directory, a changed config) leaves the run's .hydra/ as it was. The first run writes
    .hydra/ itself; each accepted rerun writes .hydra/rerun-<n>/ beside it.
    """
    target = run_dir / ".hydra"
    if (target / "config.yaml").exists():
        n = 1
        while (target / f"rerun-{n}").exists():
            n += 1
        target = target / f"rerun-{n}"
    target.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, target / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)}), target / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), target / "overrides.yaml")
    return target


def relaunched(config, run_dir: Path) -> float:
    """Run the job in hardware.num_processes ranks under torchrun; the sweep objective comes from its metrics."""
    from drl import distributed

    code = distributed.relaunch(config.hardware, list(HydraConfig.get().overrides.task), run_dir)
    if code != 0:
        fail(f"the {config.hardware.num_processes} ranks under torchrun exited with status {code}.", code=code)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return next((r["reward_mean"] for r in reversed(records) if "reward_mean" in r), float("nan"))


def main() -> None:
    if "--plan" in sys.argv[1:]:  # the memory plan of this config instead of the run (drl/plan/)
        from drl.plan.cli import plan_main

        plan_main([arg for arg in sys.argv[1:] if arg != "--plan"])
        exit_without_teardown(0)
    register_configs()
    with hydra_errors_in_one_sentence():
        hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(run)()
    exit_without_teardown(0)


OURS = "DRL_COMPACT_HYDRA_ERRORS"  # marks a HYDRA_FULL_ERROR=1 that drl set, not the user (children inherit both)


@contextlib.contextmanager
def hydra_errors_in_one_sentence():
    """Hydra's composition errors (a misspelt key, a wrong type, an unknown group option) end with one sentence and
    exit 2, like drl's own checks. HYDRA_FULL_ERROR=1 makes Hydra raise them instead of printing its few-line
    report, so drl sets it, unless the user did, who then gets Hydra's full traceback as Hydra documents."""
    import os

    if os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(OURS) != "1":
        yield
        return
    os.environ["HYDRA_FULL_ERROR"], os.environ[OURS] = "1", "1"
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as e:
        fail(hydra_error_sentence(e))
    except OSError as e:  # Hydra creating the run directory (or a sweep's) before drl's code runs
        fail(f"{e.strerror or e}: {e.filename} (Hydra could not create the run directory; choose another with hydra.run.dir=...).")


def hydra_error_sentence(error: Exception) -> str:
    """One sentence for a Hydra composition error, from the exception's own fields and first line."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.options:
        missing = error.missing_cfg_file or str(error).split("'")[1]
        group = missing.rsplit("/", 1)[0]
        return (f"{group}={missing.rsplit('/', 1)[-1]} is not an option of the '{group}' group; its options are "
                f"{', '.join(error.options)} (your own go in a directory on Hydra's search path: docs/guide/configuration.md).")
    if isinstance(error, OverrideParseException):
        return f"an override could not be parsed: {str(error).splitlines()[0]} (the grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)."
    cause = error.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and "not in" in str(cause):
        return f"{full_key} is not a key of drl's config: check its spelling (`drl-train <your overrides> --cfg job` prints every key)."
    if full_key:
        return f"{full_key}: {str(cause).splitlines()[0].rstrip('.')}."
    return f"{str(error).splitlines()[0].rstrip('.')}."  # every run (or sweep job) has finished and written all it leaves


def exit_without_teardown(code: int) -> None:
    """End the process at once, after what a normal exit does that anyone can see: the atexit
    handlers (logging, W&B, multiprocessing, weakref finalizers) and flushing stdout/stderr.

    What it skips is the interpreter's teardown: freeing the ~3,700 modules that torch, diffusers
    and transformers import took 2-3 s of CPU at the end of every run (docs/results/2026-12-03-speed.md).
    A live non-daemon thread would be joined by a normal exit, so then the normal exit is kept.
    """
    import atexit
    import os
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
