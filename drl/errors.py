"""Which exceptions are the user's (bad input, the machine's disk) and the one sentence that says so.

drl-train turns every exception that stems from the user's input or environment into one
sentence and a non-zero exit; anything else is a bug in drl and keeps its traceback.
"""

from __future__ import annotations

import errno

from drl.config import ConfigError


class RunError(RuntimeError):
    """The run cannot go on for a reason outside drl's code (a file, the run dir, a checkpoint); the message says what to do."""


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
