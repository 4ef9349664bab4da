"""Nothing lost, nobody in: checkpoints that never run code, a run dir that one process owns, resume that
refuses a changed config, and one sentence (no traceback) for every user mistake.

The CLI tests run drl-train in subprocesses on tiny runs; read-only and full disks are real mounts in a
private mount namespace (``unshare``), skipped where the machine does not allow one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from drl import cli
from drl.checkpoint import (
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from drl.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    Preempted,
    ResumeRefused,
    RewardError,
    RunDirLocked,
    RunError,
    UnsafeCheckpointError,
    user_message,
)
from drl.preemption import PreemptionWatch
from drl.resume import apply_optimizer_settings, check_changes, choose_checkpoint, find_resume_point, optimizer_settings
from drl.runlock import LOCK_NAME, RunLock
from drl.schema_checks import non_finite
from drl.train import train

from conftest import TINY, compose_config, compose_raw, read_records
from test_cli import drl_train

MARKER = "pwned"


class _Payload:
    """Unpickling this calls os.system: it writes the marker file (a stand-in for any attacker's code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(path: Path) -> Path:
    """A file that looks like a drl checkpoint and runs code when unpickled with weights_only=False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "weights": {}, "algorithm": _Payload(path.parent / MARKER)}, path)
    return path


def _one_sentence_error(result, code: int = 2) -> str:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("drl-train: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


# ----------------------------------------------------------------------- checkpoints
def test_crafted_pickle_checkpoint_is_refused_and_never_runs(tmp_path):
    path = crafted_checkpoint(tmp_path / "last.pt")
    torch.load(path, weights_only=False)  # the payload is real: plain unpickling runs it
    assert (tmp_path / MARKER).exists()
    (tmp_path / MARKER).unlink()
    with pytest.raises(UnsafeCheckpointError, match="only pickle can load, and loading them could run code"):
        load_checkpoint(path)
    assert not (tmp_path / MARKER).exists()


def test_crafted_checkpoint_in_a_run_dir_stops_drl_train_with_one_sentence(tmp_path):
    run_dir = tmp_path / "run"
    crafted_checkpoint(run_dir / "checkpoints" / "last.pt")
    line = _one_sentence_error(drl_train([*TINY, f"hydra.run.dir={run_dir}"], tmp_path))
    assert "could run code: drl refuses it" in line
    assert not (run_dir / "checkpoints" / MARKER).exists()
    assert not (run_dir / ".hydra").exists()  # refused before anything was written


@pytest.mark.slow
def test_sample_grid_refuses_a_crafted_checkpoint(tmp_path):
    path = crafted_checkpoint(tmp_path / "evil.pt")
    script = Path(__file__).resolve().parents[1] / "scripts" / "sample_grid.py"
    result = subprocess.run(
        [sys.executable, str(script), "--checkpoint", str(path), "-n", "1", "--steps", "1", "--out", str(tmp_path / "g.png")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode != 0 and "could run code: drl refuses it" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    "content",
    [b"", os.urandom(2000), b"PK\x03\x04 truncated zip", "truncated", "a list"],
    ids=["empty", "garbage", "zip-header", "truncated", "not-drl"],
)
def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "last.pt"
    if content == "truncated":
        save_checkpoint(tmp_path, {"epoch": 3, "weights": {"unet": {"w": torch.zeros(5000)}}})
        path.write_bytes(path.read_bytes()[:3000])
    elif content == "a list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint|is not a drl checkpoint"):
        load_checkpoint(path)


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "weights": {"unet": {"w": torch.full((3,), float(epoch))}}}


def test_the_last_two_checkpoints_are_kept_and_a_damaged_last_falls_back_to_the_previous(tmp_path):
    directory = tmp_path / "checkpoints"
    for epoch in range(3):
        save_checkpoint(directory, _state(epoch))
    assert sorted(p.name for p in directory.iterdir()) == ["last.pt", "previous.pt"]
    assert load_checkpoint(directory / "previous.pt")["epoch"] == 1
    (directory / "last.pt").write_bytes(b"\x00" * 100)  # e.g. a disk error, a bad copy
    path, notes, state = choose_checkpoint(tmp_path, None)
    assert path == directory / "previous.pt" and state["epoch"] == 1
    assert "is damaged" in notes[0] and "continuing from previous.pt" in notes[0]
    assert (directory / "last.pt.damaged").is_file() and not (directory / "last.pt").exists()  # out of the rotation
    save_checkpoint(directory, _state(2))  # the next save does not rotate the damaged file into previous.pt
    assert load_checkpoint(directory / "previous.pt")["epoch"] == 1


def test_no_usable_checkpoint_says_what_to_do_instead_of_failing_forever(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / "last.pt").write_bytes(b"junk")
    (directory / "previous.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="No usable checkpoint is left: move .* aside to start the run over"):
        choose_checkpoint(tmp_path, None)
    assert (directory / "last.pt").is_file()  # nothing renamed: a rerun does not silently start over


def test_a_checkpoint_without_the_resume_state_is_refused_with_the_way_out(tmp_path):
    save_checkpoint(tmp_path / "checkpoints", _state(0))  # weights only: drl-eval can load it, a run cannot go on from it
    with pytest.raises(CheckpointError, match="cannot be continued: it lacks algorithm, ranks, nonfinite_in_a_row, config .*hydra.run.dir"):
        find_resume_point(compose_config([]), tmp_path)


def test_stale_temporaries_are_removed(tmp_path):
    save_checkpoint(tmp_path, _state(0))
    for k in range(3):
        (tmp_path / f".tmp-{k}.pt").write_bytes(b"half a checkpoint")
    assert remove_stale_temporaries(tmp_path) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "override, message",
    [
        ("+foo=1", "foo is not a key of drl's config"),
        ("+train.epoch=3", "train.epoch is not a key of drl's config"),
        ("+algorithm.learning_rate=1e-3", "algorithm.learning_rate is not a key"),
        ("reward.terms.toy_aesthetic=nan", "reward.terms.toy_aesthetic must be a finite number"),
        ("reward.terms.toy_aesthetic=inf", "reward.terms.toy_aesthetic must be a finite number"),
        ("scheduler.eta=nan", "scheduler.eta must be a finite number"),
        ("algorithm.lr=nan", "algorithm.lr must be a finite number"),
        ("algorithm.adam_betas=[0.9,-inf]", "algorithm.adam_betas[1] must be a finite number"),
        ("resume_changes=maybe", "resume_changes='maybe' is not one of refuse, allow"),
    ],
)
def test_unknown_keys_and_non_finite_numbers_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compose_config([override])


def test_non_finite_check_covers_every_float_field_of_every_schema():
    """Generic: a float field that another engineer adds tomorrow is checked without new code."""
    import dataclasses

    from drl import config
    from drl.algorithms import ALGORITHMS

    checked = 0
    for schema in [*vars(config).values(), *(entry.schema for entry in ALGORITHMS.values())]:
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            continue
        try:
            instance = schema()
        except Exception:  # a schema with MISSING fields (AlgorithmConfig.name) is still walked through subclasses
            continue
        for f in dataclasses.fields(schema):
            if isinstance(getattr(instance, f.name), float):
                broken = dataclasses.replace(instance, **{f.name: float("nan")})
                assert non_finite(broken) == [f.name], (schema.__name__, f.name)
                checked += 1
    assert checked >= 40


# ------------------------------------------------------------------ resume rules
def test_resume_refuses_fixed_differences_even_when_changes_are_allowed(tmp_path):
    saved = {"algorithm.name": "ddpo", "algorithm.lr": 3e-4, "model.finetune": "full", "model.lora_rank": 8, "seed": 0, "world_size": 1}
    for key, value in [("algorithm.name", "rwr"), ("model.finetune", "lora"), ("model.lora_rank", 4), ("world_size", 2)]:
        with pytest.raises(ResumeRefused, match=f"Cannot continue .* with a different {key}"):
            check_changes(saved, {**saved, key: value}, allow=True, path=tmp_path)
    changed = {**saved, "algorithm.lr": 1e-3, "seed": 1}
    with pytest.raises(ResumeRefused, match=r"algorithm.lr \(0.0003 -> 0.001\), seed \(0 -> 1\).*resume_changes=allow"):
        check_changes(saved, changed, allow=False, path=tmp_path)
    assert check_changes(saved, changed, allow=True, path=tmp_path) == [("algorithm.lr", 3e-4, 1e-3), ("seed", 0, 1)]
    assert check_changes(saved, {**saved, "algorithm.new_field": 1}, allow=False, path=tmp_path) == []  # a newer drl's key


def test_new_learning_rate_is_applied_after_loading_and_keeps_its_warmup_position():
    class Algo:
        def __init__(self, lr):
            self.param = torch.nn.Parameter(torch.zeros(2))
            self.optimizer = torch.optim.AdamW([self.param], lr=lr)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / 4))

    old = Algo(1e-3)
    for _ in range(2):
        old.optimizer.step()
        old.lr_scheduler.step()
    assert old.optimizer.param_groups[0]["lr"] == pytest.approx(0.75e-3)
    new = Algo(2e-3)
    settings = optimizer_settings(new)
    new.optimizer.load_state_dict(old.optimizer.state_dict())
    new.lr_scheduler.load_state_dict(old.lr_scheduler.state_dict())
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(0.75e-3)  # torch keeps the checkpoint's lr
    apply_optimizer_settings(new, settings)
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-3)  # the new lr, 3/4 of the way up its warm-up
    new.optimizer.step()
    new.lr_scheduler.step()
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)


COMMON = ["hardware.num_threads=1", "train.save_every=1"]


def test_resume_refuses_a_changed_config_then_applies_allowed_changes_and_survives_a_damaged_last(tmp_path, random_toy_model):
    run = lambda *extra: train(compose_config([f"model.path={random_toy_model}", *COMMON, *extra]), tmp_path)  # noqa: E731
    run()
    for changed in (["algorithm=rwr"], ["model.finetune=lora"], ["seed=1"], ["algorithm.lr=1e-3"]):
        with pytest.raises(ResumeRefused):
            run("train.epochs=3", *changed)
    assert [r["epoch"] for r in read_records(tmp_path)] == [0, 1]
    run("train.epochs=3", "algorithm.lr=1e-3", "resume_changes=allow")
    assert json.loads((tmp_path / "resume_changes.jsonl").read_text())["changes"] == {"algorithm.lr": {"old": 3e-4, "new": 1e-3}}
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["algorithm"]["optimizer"]["param_groups"][0]["lr"] == 1e-3
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"\x00" * 64)  # epoch 2's checkpoint is lost
    with pytest.raises(ResumeRefused, match="previous.pt was trained with in algorithm.lr"):  # epoch 1 ran at the old lr
        run("train.epochs=4", "algorithm.lr=1e-3")
    assert (tmp_path / "checkpoints" / "last.pt.damaged").is_file()
    run("train.epochs=4", "algorithm.lr=1e-3", "resume_changes=allow")  # from previous.pt (epoch 1): redoes 2, then 3
    assert [r["epoch"] for r in read_records(tmp_path)] == [0, 1, 2, 3]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3


def test_a_run_that_never_checkpointed_restarts_without_duplicating_epochs(tmp_path, random_toy_model):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "reward_mean": 0.5}\n{"epoch": 1, "reward_mean": 0.6}\n')  # killed before its first save
    train(compose_config([f"model.path={random_toy_model}", "hardware.num_threads=1", "train.epochs=1"]), tmp_path)
    records = read_records(tmp_path)
    assert [r["epoch"] for r in records] == [0] and records[0]["reward_mean"] != 0.5


def test_same_seed_and_threads_give_identical_metrics(tmp_path, random_toy_model):
    overrides = [f"model.path={random_toy_model}", "hardware.num_threads=1", "train.save_every=100"]
    timing = ("sample_time_s", "update_time_s", "samples_per_s", "cpu_s")
    runs = []
    for name in ("a", "b"):
        train(compose_config(overrides), tmp_path / name)
        runs.append([{k: v for k, v in r.items() if k not in timing} for r in read_records(tmp_path / name)])
    assert len(runs[0]) == 2 and runs[0] == runs[1]


# ------------------------------------------------------------------ the lock
def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = f"from drl.runlock import RunLock; import time; RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_locked_run_dir_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirLocked, match=f"in use by process {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path).acquire()  # its owner was killed -9: the lock is stale
    assert lock.previous_owner["pid"] == holder.pid
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert RunLock(tmp_path).acquire().previous_owner is None  # released cleanly: not stale


def cli_path() -> str:
    return shutil.which("drl-train") or os.path.join(os.path.dirname(sys.executable), "drl-train")


@pytest.mark.slow  # ~29 CPU-s; pytest -m slow tests/test_safety.py
def test_two_drl_train_on_one_run_dir_and_a_refused_rerun(tmp_path, random_toy_model):
    """While a run works, a second drl-train on its dir stops with one sentence; each epoch is logged once;
    the first run took over a stale lock and removed a killed run's temporary file; a rerun with a changed
    config is refused and leaves .hydra/ as it was."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / ".tmp-killed.pt").write_bytes(b"half")  # left by a kill -9
    (run_dir / LOCK_NAME).write_text('{"pid": 999999, "host": "gone"}\n')  # stale: nobody holds its flock
    args = [*TINY, f"model.path={random_toy_model}", "hardware.num_threads=1", "train.epochs=3", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([cli_path(), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").is_file():  # epoch 0 logged: the lock is held and .hydra/ written whole
        assert first.poll() is None and time.monotonic() < deadline, "the first run ended early"
        time.sleep(0.1)
    hydra_files = {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()}
    first.send_signal(signal.SIGSTOP)  # paused, holding its lock: the second run surely meets it, however loaded the machine
    try:
        second = drl_train([*args, "seed=5"], tmp_path)
    finally:
        first.send_signal(signal.SIGCONT)
    assert f"is in use by process {first.pid} on " in _one_sentence_error(second)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert "lock of process 999999 on gone was stale" in out and "Removed 1 half-written" in out
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert [r["epoch"] for r in read_records(run_dir)] == [0, 1, 2]
    assert (run_dir / LOCK_NAME).read_text() == ""  # released
    line = _one_sentence_error(drl_train([*args, "algorithm.lr=1e-3"], tmp_path))
    assert "algorithm.lr (0.0003 -> 0.001)" in line and "resume_changes=allow" in line
    assert {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()} == hydra_files


@pytest.mark.slow
def test_an_accepted_rerun_keeps_its_overrides_beside_the_first(tmp_path, random_toy_model):
    run_dir = tmp_path / "run"
    args = [*TINY, f"model.path={random_toy_model}", "hardware.num_threads=1", "train.epochs=1", f"hydra.run.dir={run_dir}"]
    assert drl_train(args, tmp_path).returncode == 0
    first_overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    accepted = drl_train([*args, "train.epochs=2", "algorithm.lr=1e-3", "resume_changes=allow"], tmp_path)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert "with new settings: algorithm.lr (0.0003 -> 0.001)" in accepted.stdout
    assert "algorithm.lr=1e-3" in (run_dir / ".hydra" / "rerun-1" / "overrides.yaml").read_text()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == first_overrides
    assert [r["epoch"] for r in read_records(run_dir)] == [0, 1]


# ------------------------------------------------------------ one error path
def _cli_run(monkeypatch, capsys, exc: BaseException) -> tuple[int, str]:
    def failing(cfg, config):
        raise exc

    monkeypatch.setattr(cli, "_run", failing)
    with pytest.raises(SystemExit) as stop:
        cli.run(compose_raw(TINY))
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "exc, message",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/run/metrics.jsonl"), "No space left on device (/run/metrics.jsonl): the disk is full"),
        (OSError(errno.EROFS, "Read-only file system", "/run/.drl.lock"), "the file system is read-only: choose a writable run directory"),
        (PermissionError(errno.EACCES, "Permission denied", "/run"), "permission denied: choose a run directory you can write to"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not UTF-8 text"),
        (RunError("The run directory is in use."), "The run directory is in use."),
        (MemoryError(), "out of memory: lower train.batch_size"),
        (Preempted("SIGINT", 3, False), "Stopped by SIGINT after epoch 3"),
        (NonFiniteError("The loss was NaN/inf in 3 epochs in a row; stopping."), "The loss was NaN/inf in 3 epochs"),
        (RewardError("reward 'judge': no reward server answered."), "reward 'judge': no reward server answered."),
    ],
)
def test_user_and_environment_errors_are_one_sentence(monkeypatch, capsys, exc, message):
    code, err = _cli_run(monkeypatch, capsys, exc)
    assert code == {Preempted: cli.PREEMPTED_EXIT_CODE, NonFiniteError: cli.NONFINITE_EXIT_CODE}.get(type(exc), 2)
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_exception_drl_raises_on_purpose_lives_in_drl_errors():
    """drl.errors imports nothing from drl; a reward's failure is a run-time error, not a config error."""
    import ast

    import drl.errors

    tree = ast.parse(Path(drl.errors.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and "drl" in ast.unparse(n)]
    defined = [
        (path.name, node.name)
        for path in Path(drl.errors.__file__).parent.rglob("*.py")
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases)
    ]
    assert defined == []
    assert issubclass(RewardError, RunError) and not issubclass(RewardError, ConfigError)


def test_a_bug_keeps_its_traceback_and_says_it_is_a_bug(monkeypatch, capsys):
    code, err = _cli_run(monkeypatch, capsys, ZeroDivisionError("division by zero"))
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err and "this is a bug in drl" in err
    assert user_message(ValueError("x")) is None


def test_ctrl_c_twice_exits_130_with_one_sentence(monkeypatch, capsys):
    code, err = _cli_run(monkeypatch, capsys, KeyboardInterrupt())
    assert code == cli.INTERRUPTED_EXIT_CODE and "Ctrl-C twice" in err and "Traceback" not in err


def test_first_ctrl_c_asks_for_a_checkpoint_and_a_second_stops_at_once(capsys):
    watch = PreemptionWatch([], ["SIGTERM", "SIGINT"])
    watch.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert watch.stop_requested() and "press Ctrl-C again to stop at once" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes: it raises here
    finally:
        watch.uninstall()
    assert compose_config([]).preemption.stop_signals == ["SIGTERM", "SIGINT"]  # Ctrl-C checkpoints by default


def test_binary_prompts_file_and_wrong_model_family_are_config_errors(tmp_path, tiny_dirs):
    from drl.models.loading import load_t2i
    from drl.prompts import build_prompt_source

    binary = tmp_path / "prompts.txt"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        build_prompt_source(compose_config(["prompts.source=file", f"prompts.path={binary}"]).prompts)
    with pytest.raises(ConfigError, match="model.family=sd but .* holds a sdxl model"):
        load_t2i(tiny_dirs["sdxl"], "sd")


# --------------------------------------------------------- real read-only and full disks
def _namespace_prefix() -> list[str]:
    """unshare -m (root) or -rm (user namespaces): mounts private to one command, gone when it ends."""
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        if shutil.which("unshare") and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("no mount namespace here (unshare is missing or not permitted)")


def _in_namespace(tmp_path, script: str) -> subprocess.CompletedProcess:
    """Run a shell ``script`` (``{mnt}``: an empty directory to mount on) in a private mount namespace."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [*_namespace_prefix(), "sh", "-c", script.replace("{mnt}", str(mount))], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    if "mount:" in result.stderr:
        pytest.skip(f"cannot mount here: {result.stderr.strip()[:200]}")
    return result


def test_read_only_run_dir_is_one_sentence(tmp_path):
    command = " ".join(f"'{a}'" for a in [cli_path(), *TINY, "hydra.run.dir={mnt}/run"])
    result = _in_namespace(tmp_path, "mount -t tmpfs -o size=1m tmpfs {mnt} && mkdir {mnt}/run && mount -o remount,ro {mnt} && " + command)
    assert "the file system is read-only" in _one_sentence_error(result)


@pytest.mark.slow
def test_full_disk_is_one_sentence_and_the_rerun_loses_nothing(tmp_path, random_toy_model):
    """12 MB checkpoints on a 30 MB disk: epoch 2's save does not fit (last + previous + the new one). After
    the disk grows, the same command continues from epoch 1's checkpoint and the run ends complete."""
    args = [*TINY, f"model.path={random_toy_model}", "hardware.num_threads=1", "train.epochs=4", "train.save_every=1", "train.eval_size=0"]
    command = " ".join(f"'{a}'" for a in [cli_path(), *args, "hydra.run.dir={mnt}/run"])
    result = _in_namespace(
        tmp_path,
        "mount -t tmpfs -o size=30m tmpfs {mnt} && { " + command + "; echo first=$? >&2; }"
        " && mount -o remount,size=80m {mnt} && " + command + " && cat {mnt}/run/metrics.jsonl && ls -a {mnt}/run/checkpoints",
    )
    first, _, second = result.stderr.partition("first=")
    assert second.startswith("2"), result.stderr[-3000:]
    errors = [line for line in first.splitlines() if line.startswith("drl-train: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "the disk is full" in errors[0] and "Traceback" not in first
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert "Resuming from" in result.stdout and ".tmp-" not in result.stdout


def test_eval_json_stays_valid_json_when_a_reward_is_nan():
    import json

    from drl.images import json_safe, nan_for_null

    record = {"before": [0.5, float("nan")], "summary": {"eval/gain": float("inf"), "eval/n": 2}, "prompt": "a"}
    text = json.dumps(json_safe(record), allow_nan=False)
    assert json.loads(text) == {"before": [0.5, None], "summary": {"eval/gain": None, "eval/n": 2}, "prompt": "a"}
    back = nan_for_null(json.loads(text))  # the "after" stage reads the file back to pair the scores
    assert back["before"][0] == 0.5 and back["before"][1] != back["before"][1]  # NaN again
