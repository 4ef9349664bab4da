"""Every exception drl raises on purpose, which of them are the user's, and the one sentence that says so.

drl-train turns every exception that stems from the user's input or environment into one
sentence and a non-zero exit; anything else is a bug in drl and keeps its traceback.

    ConfigError            the config is wrong (before any work, or found while building the run)
    RunError               the run cannot go on for a reason outside drl's code:
      RunDirLocked           another process owns the run directory
      CheckpointError        a checkpoint cannot be used
        UnsafeCheckpointError  it needs pickle's code-running loader
      ResumeRefused          the checkpoint belongs to a run with other settings
      RewardError            a reward broke its contract or could not be reached
    Preempted              the run stopped on a signal after checkpointing (exit 143)
    NonFiniteError         rewards or losses stayed NaN/inf (exit 3)

This module imports nothing from drl (and no torch), so that every module can import it.
"""

from __future__ import annotations

import errno
import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A user's config is wrong; the message says what and how to fix it."""


class PlanError(ConfigError):
    """A model or option the memory plan (drl/plan/) cannot size; its message is one sentence for the user."""


class RunError(RuntimeError):
    """The run cannot go on for a reason outside drl's code (a file, the run dir, a checkpoint); the message says what to do."""


class RunDirLocked(RunError):
    """Another live process owns this run directory."""


class CheckpointError(RunError):
    """A checkpoint cannot be used: unreadable, not drl's, or made by another kind of run."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs pickle's arbitrary-object loading, which can run code: never loaded."""


class ResumeRefused(RunError):
    """The checkpoint belongs to a run with other settings."""


class RewardError(RunError):
    """A reward broke its contract or could not be reached: one sentence naming the reward and the fix.

    A run-time failure, not a config error: it can come from a plug-in's code or a reward server
    in the middle of a run (the last checkpoint stays; the same command resumes).
    """


class Preempted(RuntimeError):
    """The run stopped on a signal after writing its checkpoint."""

    def __init__(self, signame: str, epoch: int, requeued: bool):
        self.signame, self.epoch, self.requeued = signame, epoch, requeued
        then = "requeued the SLURM job" if requeued else "rerun the same command to resume"
        super().__init__(f"Stopped by {signame} after epoch {epoch}; checkpoint written, {then}.")


class NonFiniteError(RuntimeError):
    """Rewards or losses stayed NaN/inf for too many epochs; the last good checkpoint is kept."""


# OSErrors that describe the machine, not drl: what happened, and what to do about it.
_OS_ERRORS = {
    errno.ENOSPC: "the disk is full: free space (or choose another hydra.run.dir) and rerun the same command to resume from the last checkpoint",
    errno.EDQUOT: "the disk quota is exceeded: free space and rerun the same command to resume from the last checkpoint",
    errno.EROFS: "the file system is read-only: choose a writable run directory with hydra.run.dir=...",
    errno.EACCES: "permission denied: choose a run directory you can write to with hydra.run.dir=..., or fix the file's permissions",
    errno.EPERM: "operation not permitted: choose a run directory you can write to with hydra.run.dir=...",
    errno.EFBIG: "the file would grow beyond the size this process may write (ulimit -f)",
    errno.EIO: "the storage device reported an input/output error",
    errno.ENOENT: "",
    errno.EISDIR: "",
    errno.ENOTDIR: "",
}


def user_message(exc: BaseException) -> str | None:
    """One sentence for an exception caused by the user's input or environment; None for a bug."""
    if isinstance(exc, (ConfigError, RunError)):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"a text file holds bytes that are not UTF-8 text ({exc.reason} at byte {exc.start}); is it a binary file?"
    if isinstance(exc, MemoryError):
        return "out of memory: lower train.batch_size or model.resolution, or use a machine with more memory."
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        where = f" ({exc.filename})" if exc.filename else ""
        hint = _OS_ERRORS[exc.errno]
        return f"{exc.strerror}{where}" + (f": {hint}." if hint else ".")
    if isinstance(exc, FileNotFoundError):  # raised by drl's loaders with a sentence naming the path
        return str(exc)
    return None


def fail(message: str, code: int = 2, program: str = "drl-train") -> NoReturn:
    """End a command-line program with ``<program>: error: <message>`` on stderr and exit status ``code``."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(code)


class HTTPRefusal(Exception):
    """A reward server's refusal: its HTTP status and the one sentence the client shows (the server raises it for a
    request it will not score; the remote reward raises it for an error status it received)."""

    def __init__(self, status: int, sentence: str):
        super().__init__(sentence)
        self.status = status
