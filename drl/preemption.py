"""Preemption: a signal asks the run to stop; it checkpoints at the end of the epoch, and may requeue.

SLURM sends a signal before a job's time limit (sbatch --signal=USR1@120; submitit uses USR2)
and SIGTERM when it preempts or cancels a job; Ctrl-C (SIGINT) is a stop signal too, and a second
Ctrl-C stops at once (KeyboardInterrupt; the last checkpoint written is kept). The handler only sets a flag: the loop finishes
the epoch it is in, writes the checkpoint and stops, so the checkpoint is always an epoch
boundary and a restart continues exactly. Ranks agree on the stop through one collective per
epoch (distributed.any_rank), so a signal that reached one rank stops them all at the same epoch.
A requeue signal inside a SLURM job also puts the job back in the queue (rank 0 runs
``scontrol requeue``); on restart the same run dir resumes from that checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from drl import distributed
from drl.errors import Preempted


def parse_signals(names: list[str]) -> list[signal.Signals]:
    """["SIGUSR1", "SIGTERM"] -> signals (names are checked by drl.config.validate)."""
    return [signal.Signals[name] for name in names]


class PreemptionWatch:
    """Between install() and uninstall(), the given signals set a flag instead of killing the process."""

    def __init__(self, requeue_signals: list[str], stop_signals: list[str]):
        self.requeue = set(parse_signals(requeue_signals))
        self.signals = [*self.requeue, *parse_signals(stop_signals)]
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            if self.received == signal.SIGINT:  # Ctrl-C twice: the person wants out now, checkpoint or not
                raise KeyboardInterrupt
            print("\nCtrl-C: the run stops after this epoch's checkpoint; press Ctrl-C again to stop at once.", file=sys.stderr, flush=True)
        if self.received is None or signal.Signals(signum) in self.requeue:
            self.received = signal.Signals(signum)  # a requeue request wins over a plain stop

    def install(self) -> None:
        self._previous = {s: signal.signal(s, self._handle) for s in self.signals}

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def stop_requested(self) -> bool:
        """Collective: every rank calls it once per epoch and gets the same answer."""
        return distributed.any_rank(self.received is not None)

    def stop(self, epoch: int) -> Preempted:
        """After the checkpoint: requeue the SLURM job (rank 0) when a requeue signal came in."""
        signame = self.received.name if self.received is not None else "another rank's signal"
        requeue = self.received in self.requeue and "SLURM_JOB_ID" in os.environ
        requeue = distributed.any_rank(requeue)
        if requeue and distributed.is_main():
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
        return Preempted(signame, epoch, requeue)
