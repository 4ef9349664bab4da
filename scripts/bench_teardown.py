"""CPU seconds a drl-train process spends after its last atexit handler: the interpreter's teardown.

One drl-train run of the source tree --src (e.g. an older commit's tree) with the given overrides;
prints the whole process's CPU time (user + system) and the part spent after every atexit handler
had run, i.e. freeing modules and objects at exit. CPU time, not wall time, so that it means
something on a shared machine.

    OMP_NUM_THREADS=1 python scripts/bench_teardown.py --src . train.epochs=1 hardware.num_threads=1 logger=none
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

# Run inside the measured process: its first atexit handler runs last and writes the CPU time used so far.
CHILD = r"""
import atexit, resource, runpy, sys
mark = sys.argv[1]
def last():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    open(mark, "w").write(str(usage.ru_utime + usage.ru_stime))
atexit.register(last)
sys.argv = ["drl-train", *sys.argv[2:]]
runpy.run_module("drl.cli", run_name="__main__", alter_sys=True)
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=Path("."), help="drl source tree to run")
    parser.add_argument("overrides", nargs="*", help="drl-train overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        mark = Path(work, "cpu")
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "WANDB_SILENT": "true"}
        command = [sys.executable, "-c", CHILD, str(mark), *args.overrides, f"hydra.run.dir={work}/run"]
        before = children_cpu()
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        total = children_cpu() - before
        if done.returncode != 0 or not mark.is_file():
            raise SystemExit(f"bench_teardown: the run failed:\n{done.stderr[-2000:]}")
        after_handlers = total - float(mark.read_text())
    print(f"{args.src}: process CPU {total:.2f} s, of which after the atexit handlers {after_handlers:.2f} s")


if __name__ == "__main__":
    main()
