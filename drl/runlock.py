"""One process owns a run directory: a lock file with the owner's pid and host.

The lock is an ``flock`` on <run dir>/.drl.lock, which the kernel releases when its owner dies
in any way (kill -9 included): a lock left behind by a dead run is stale by construction and is
taken over, with a note naming the old owner. The file's text (pid, host, start time) is only
for the message a second drl-train prints; it is emptied, never deleted, on release (deleting
would let two later runs lock two different files of the same name).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from drl.errors import RunDirLocked

LOCK_NAME = ".drl.lock"


class RunLock:
    """Held from acquire() to release() (or the process's end); ``previous_owner`` names a stale lock's owner."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self.previous_owner: dict | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "another process"
            raise RunDirLocked(
                f"The run directory {self.path.parent} is in use by {who} (lock {self.path}); "
                "wait for it to finish, or choose another directory with hydra.run.dir=..."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.previous_owner = _read_owner(fd)  # text left by an owner that died without releasing: stale
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full or read-only disk: the kernel still drops the lock on close
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> dict | None:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?"}
    return owner if isinstance(owner, dict) else None
