"""Nothing lost, nothing mixed, nothing silently wrong: kills, signals, torn writes, full disks, two
writers, resumes that would change a run, diverged states, corrupt files and hostile input.

Runs are tiny (digits or a folder of 8x8 images, a quarter-width MLP, a handful of steps). Kills
and signals go to real ``gnbench`` subprocesses; a full or read-only disk is a writer that fails
the way the OS does (and a real 1 MiB-scale tmpfs where this machine can mount one).
"""

from __future__ import annotations

import errno
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import gn_plugin
from gn_plugin import GnPluginError
from gn_plugin.cli import main
from gn_plugin.config import RESUMABLE_KEYS, load_config
from gn_plugin.data.base import TensorImageDataset
from gn_plugin.evaluation import reference
from gn_plugin.experiments import bench, invocations, pages, report
from gn_plugin.experiments import spec as bench_spec
from gn_plugin.experiments.smoke import write_stand_in_inception
from gn_plugin.registry import NameClash, register, registry
from gn_plugin.training import checkpoint
from gn_plugin.training.data_stream import BatchStream
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles, RunLock
from gn_plugin.training.state import TrainingDiverged

from run_weights import assert_same_weights

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "yaml_configs" / "digits"
GNBENCH = [sys.executable, "-m", "gn_plugin.cli"]
#: a tiny digits run: 10 steps, quarter-width MLP, one cheap evaluation at the end
TINY = {
    "train": {"steps": 10, "batch_size_d": 16, "batch_size_g": 16, "device": "cpu", "log_every": 5,
              "sample_every": 1000, "sample_count": 4, "checkpoint_every": 5},
    "eval": {"every": 0, "num_samples": 64, "batch_size": 64},
    "model": {"width": 0.25},
}


def write_config(path: Path, method: str = "gn", **sections) -> Path:
    """A config file on the digits recipe ``method`` with the :data:`TINY` budget (``sections`` merged on top)."""
    data = {"base": str(DIGITS / f"{method}.yaml"), **{k: dict(v) for k, v in TINY.items()}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def logged_steps(path: Path) -> list[int]:
    """The steps of a JSON-lines log, every line of which must be whole."""
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def error_line(stderr: str) -> str:
    """The one error line of a command's stderr (warnings, one line each, may come before it)."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("gnbench: warning:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny digits run (10 steps, checkpoints at 5 and 10) and the config file it came from."""
    folder = tmp_path_factory.mktemp("finished")
    config_path = write_config(folder / "config.yaml")
    train(load_config(config_path), folder / "run", progress=False)
    return config_path, folder / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of :func:`finished_run` to damage."""
    config_path, run = finished_run
    shutil.copytree(run, tmp_path / "run")
    return config_path, tmp_path / "run"


# -- exact resume, also for data read through a DataLoader ------------------------------------------
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> dict[str, str]:
    """48 random 8x8 RGB PNGs and a stand-in Inception: the ``data``/``eval`` settings of a folder run."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    for index in range(48):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "images" / f"{index:02d}.png")
    inception = write_stand_in_inception(folder / "inception.pt")
    return {"root": str(folder / "images"), "inception": str(inception), "cache": str(folder / "cache")}


def folder_config(path: Path, images: dict[str, str], workers: int, steps: int = 10) -> Path:
    return write_config(
        path,
        data={"name": "folder", "root": images["root"], "resolution": 8, "on_device": "off", "num_workers": workers,
              "hflip": True},
        eval={"every": 0, "num_samples": 16, "batch_size": 16, "metrics": ["fid"], "best_metric": "fid",
              "inception_path": images["inception"], "cache_dir": images["cache"]},
        train={**TINY["train"], "steps": steps},
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_run_read_by_a_dataloader_resumes_exactly(tmp_path, image_folder, workers):
    config = load_config(folder_config(tmp_path / "config.yaml", image_folder, workers))
    train(config, tmp_path / "straight", progress=False)
    train(load_config(tmp_path / "config.yaml", ["train.steps=5"]), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    assert_same_weights(tmp_path / "straight", tmp_path / "split")


KILL_DURING_THIRD_CHECKPOINT = """
import os, signal, sys
import gn_plugin.training.checkpoint as checkpoint
from gn_plugin.cli import main

real_write, writes = checkpoint.write_atomically, []

def write_then_die(path, write):
    writes.append(path)
    if len(writes) < 3:
        return real_write(path, write)
    def torn(file):
        file.write(b"the first bytes of a checkpoint")
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, torn)

checkpoint.write_atomically = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_a_checkpoint_write_resumes_exactly_and_cleans_up(tmp_path, image_folder):
    config_path = folder_config(tmp_path / "config.yaml", image_folder, workers=2)
    killer = tmp_path / "killer.py"
    killer.write_text(KILL_DURING_THIRD_CHECKPOINT)
    run = tmp_path / "killed"
    killed = subprocess.run([sys.executable, str(killer), "train", str(config_path), "--out", str(run), "--no-progress",
                             "--set", "train.checkpoint_every=2"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    files = RunFiles(run)
    assert checkpoint.load(files.latest_checkpoint)["step"] == 4  # the write of step 6 was killed
    assert list(files.checkpoints.glob(".latest.pt.*.tmp"))  # and left its temporary file

    resumed = subprocess.run([*GNBENCH, "train", str(run), "--resume", "--no-progress"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    train(load_config(config_path, ["train.checkpoint_every=2"]), tmp_path / "straight", progress=False)
    assert_same_weights(run, tmp_path / "straight")
    assert not list(files.checkpoints.glob(".*.tmp"))
    log = (run / "log.txt").read_text()
    assert "took over the lock of a process that is gone (pid" in log and "removed 1 temporary file" in log


# -- signals -----------------------------------------------------------------------------------------
def wait_for(condition, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        assert process is None or process.poll() is None, process.communicate()
        time.sleep(0.05)


def logged_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2], ids=["SIGINT", "SIGTERM", "SIGUSR2"])
def test_a_signal_checkpoints_the_last_completed_step_and_exits_128_plus_it(tmp_path, signum):
    config_path = write_config(tmp_path / "config.yaml", train={**TINY["train"], "steps": 100_000, "checkpoint_every": 100_000})
    run = tmp_path / "run"
    process = subprocess.Popen([*GNBENCH, "train", str(config_path), "--out", str(run), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: logged_lines(RunFiles(run).scalars) >= 2, process=process)
        os.killpg(process.pid, signum)  # the whole process group, as a terminal's Ctrl-C
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signum, stderr
    line = error_line(stderr)
    assert signal.Signals(signum).name in line and f"gnbench train {run} --resume" in line
    assert line.startswith(f"gnbench: stopped by {signal.Signals(signum).name}")  # a deliberate stop, not an error
    step = checkpoint.load(RunFiles(run).latest_checkpoint)["step"]
    assert step >= 10 and f"at step {step}," in line
    # the checkpoint is step `step` of the run, exactly: an uninterrupted run of that many steps ends there
    train(load_config(config_path, [f"train.steps={step}"]), tmp_path / "straight", progress=False)
    assert_same_weights(run, tmp_path / "straight")


def test_a_scheduler_s_mix_of_signals_to_every_process_still_checkpoints(tmp_path, image_folder):
    """Slurm signals every process of a job step, and one event may bring TERM and USR2: the
    DataLoader workers survive it, and the run still checkpoints its last step instead of stopping
    at once (only a second Ctrl-C does that)."""
    config_path = folder_config(tmp_path / "config.yaml", image_folder, workers=2, steps=100_000)
    config = yaml.safe_load(config_path.read_text())
    config["train"].update(checkpoint_every=100_000, log_every=5)
    config_path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    process = subprocess.Popen([*GNBENCH, "train", str(config_path), "--out", str(run), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: logged_lines(RunFiles(run).scalars) >= 2, process=process)
        for signum in (signal.SIGUSR2, signal.SIGTERM, signal.SIGUSR2):
            os.killpg(process.pid, signum)  # the training process and its loader workers, as Slurm does
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGUSR2, stderr
    line = error_line(stderr)
    assert "stopped by SIGUSR2 at step" in line and "at once" not in line
    step = checkpoint.load(RunFiles(run).latest_checkpoint)["step"]
    assert step >= 10 and f"at step {step}," in line
    train(load_config(config_path, [f"train.steps={step}"]), tmp_path / "straight", progress=False)
    assert_same_weights(run, tmp_path / "straight")


def test_only_a_second_sigint_stops_at_once():
    from gn_plugin.errors import Interrupted
    from gn_plugin.training.stopping import stop_signals

    with stop_signals(second_stops_at_once=True) as stop:
        for signum in (signal.SIGTERM, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            os.kill(os.getpid(), signum)
        assert (stop.signum, stop.count) == (signal.SIGTERM, 4)
        with pytest.raises(Interrupted, match="stopped at once by a second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)


def bench_spec_file(folder: Path, **fields) -> Path:
    flat = {f"{section}.{key}": value for section, values in TINY.items() for key, value in values.items()}
    spec = {"name": "t", "base": str(DIGITS / "_recipe.yaml"), "set": flat, **fields}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_bench_stops_queued_cells_and_leaves_no_orphans(tmp_path, signum):
    long = {"train.steps": 100_000, "train.checkpoint_every": 100_000}
    path = bench_spec_file(tmp_path, methods={"gn": {"norm": "gn"}}, seeds=[0, 1, 2])
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, "set": {**spec["set"], **long}}))
    out = tmp_path / "out"
    process = subprocess.Popen([*GNBENCH, "bench", str(path), "--out", str(out), "--jobs", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = out / "runs" / "gn__seed0"
    child = None
    try:
        wait_for(lambda: logged_lines(first / "scalars.jsonl") >= 1, process=process)
        child = int((first / ".lock").read_text().split()[1])
        os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        for pid in (process.pid, child):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert process.returncode == 128 + signum, stderr
    assert "1 running cell(s) stopped with a checkpoint, 2 not started" in error_line(stderr)
    assert not alive(child)
    assert checkpoint.load(RunFiles(first).latest_checkpoint)["step"] >= 5
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["gn__seed0"]  # the queued cells never started
    (record,) = invocations.read_invocations(out)  # the stopped invocation is on record for the Cost section
    assert (record["stopped"], record["executed"], record["skipped"]) == (signal.Signals(signum).name, 0, 0)
    assert f"| 0 trained (stopped by {signal.Signals(signum).name}) |" in pages.cost_table(report.cost_rows(out))


# -- divergence --------------------------------------------------------------------------------------
class NanGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN: a finite loss that turns the weights into NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def diverging_loss(at_call: int, nan_in: str):
    """A non-saturating loss that goes wrong from its ``at_call``-th call: a NaN D loss, or a finite G loss
    whose gradient is NaN."""

    class DivergingLoss:
        d_calls = g_calls = 0

        def d_loss(self, real, fake):
            DivergingLoss.d_calls += 1
            value = torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
            return value * float("nan") if nan_in == "loss" and DivergingLoss.d_calls >= at_call else value

        def g_loss(self, fake):
            DivergingLoss.g_calls += 1
            value = torch.nn.functional.softplus(-fake).mean()
            return NanGradient.apply(value) if nan_in == "gradient" and DivergingLoss.g_calls >= at_call else value

    return DivergingLoss


@pytest.mark.parametrize(
    "nan_in, overrides, expected",
    [
        # G's loss at step 13 is finite, its update is not: only the weights tell, before the checkpoint of step 13
        ("gradient", {"log_every": 100, "checkpoint_every": 1}, "G's weights, the EMA of G, G's optimiser state hold NaN"),
        # D's loss is NaN from step 13; losses are checked every 5 steps, the evaluation at step 14 comes first
        ("loss", {"log_every": 5, "checkpoint_every": 4, "eval_every": 7}, "a loss became NaN or infinite at step 13"),
    ],
    ids=["nan-weights-before-a-checkpoint", "nan-generator-before-an-evaluation"],
)
def test_a_diverged_state_is_never_saved_nor_evaluated(tmp_path, nan_in, overrides, expected):
    name = f"diverging-{nan_in}-test"
    register("loss", name)(diverging_loss(13, nan_in))
    train_options = {**TINY["train"], "steps": 30, **{k: v for k, v in overrides.items() if k != "eval_every"}}
    config_path = write_config(tmp_path / "config.yaml", "sn", loss=name, train=train_options,
                               eval={**TINY["eval"], "every": overrides.get("eval_every", 0)})
    try:
        with pytest.raises(TrainingDiverged) as error:
            train(load_config(config_path), tmp_path / "run", progress=False)
    finally:
        registry("loss").unregister(name)
    message = str(error.value)
    files = RunFiles(tmp_path / "run")
    state = checkpoint.load(files.latest_checkpoint)
    assert expected in message and f"the last finite checkpoint is {files.latest_checkpoint} (step {state['step']})" in message
    assert "\n" not in message and state["step"] == 12
    tensors = [v for part in ("generator", "generator_ema", "discriminator") for v in state[part].values()]
    assert all(torch.isfinite(v).all() for v in tensors if v.is_floating_point())
    assert all(np.isfinite(r["fid"]) for r in files.read_results())  # no evaluation of a NaN generator


# -- resuming: what may change, both command forms, finished runs ------------------------------------
def test_a_resume_that_would_change_the_run_is_refused_before_any_file_is_touched(run_copy, capsys):
    config_path, run = run_copy
    before = snapshot(run)
    assert main(["train", str(run), "--resume", "--set", "norm=sn", "model.z_dim=16", "train.steps=20"]) == 2
    assert error_line(capsys.readouterr().err).startswith("gnbench: error: --resume: model.z_dim, norm cannot change on resume")
    assert main(["train", str(config_path), "--out", str(run), "--resume", "--set", "train.seed=3", "train.lr_d=0.1"]) == 2
    assert "train.lr_d, train.seed cannot change on resume" in error_line(capsys.readouterr().err)
    assert snapshot(run) == before  # config.yaml, checkpoints and logs as they were
    assert main(["train", str(run), "--resume", "--set", "train.steps=15", "--no-progress"]) == 0  # the run still resumes
    assert checkpoint.load(RunFiles(run).latest_checkpoint)["step"] == 15


def test_both_resume_forms_continue_the_run_and_a_finished_one_is_left_as_it_is(run_copy, capsys):
    config_path, run = run_copy
    files = RunFiles(run)
    first = json.loads(files.summary.read_text())
    first_segment = checkpoint.load(files.latest_checkpoint)["wall_time_s"]

    before = snapshot(run)
    assert main(["train", str(run), "--resume"]) == 0
    assert "finished at step 10; nothing to do" in capsys.readouterr().out
    assert snapshot(run) == before

    assert main(["train", str(config_path), "--out", str(run), "--resume", "--set", "train.steps=15", "--no-progress"]) == 0
    summary = json.loads(files.summary.read_text())
    assert summary["steps"] == 15 and load_config(files.config).train.steps == 15
    assert first_segment <= first["wall_time_s"] < summary["wall_time_s"]  # the wall time counts both segments
    assert [r["step"] for r in files.read_results()] == [10, 10, 15, 15]


# -- one writer per run directory ---------------------------------------------------------------------
def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    config_path = write_config(tmp_path / "config.yaml", train={**TINY["train"], "steps": 2})
    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run / ".lock")
    lock.acquire()  # another writer, alive
    try:
        assert main(["train", str(config_path), "--out", str(run), "--no-progress"]) == 2
        assert f"is being written by another gnbench process (pid {os.getpid()} on host" in error_line(capsys.readouterr().err)
    finally:
        lock.release()
    assert not RunFiles(run).holds_run()
    (run / ".lock").write_text(f"pid 999999999 on host {socket.gethostname()}, since 2020-01-01T00:00:00+00:00\n")  # it died
    assert main(["train", str(config_path), "--out", str(run), "--no-progress"]) == 0
    assert "took over the lock of a process that is gone (pid 999999999 on host" in (run / "log.txt").read_text()
    assert not (run / ".lock").exists()


def test_a_lock_held_on_another_host_is_stale_only_without_a_heartbeat_or_for_the_same_slurm_job(tmp_path, monkeypatch):
    """flock may not reach across hosts on a network file system: a lock that names another host is
    respected while its holder's heartbeat (the file's mtime) is fresh, whatever the pids here."""
    lock_path = tmp_path / ".lock"
    other = "pid 999999999 on host other-node, Slurm job 77, since 2026-01-01T00:00:00+00:00\n"
    lock_path.write_text(other)
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    with pytest.raises(GnPluginError, match="being written by a gnbench process on another host .*other-node.*heartbeat"):
        RunLock(lock_path).acquire()
    assert lock_path.read_text() == other  # untouched
    old = time.time() - 121
    os.utime(lock_path, (old, old))  # the holder stopped beating two minutes ago: gone
    lock = RunLock(lock_path)
    assert lock.acquire() == other.strip()
    lock.release()
    lock_path.write_text(other)
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # a requeue of the same job: Slurm ended the old instance
    lock = RunLock(lock_path, heartbeat_s=0.05)
    assert lock.acquire() == other.strip()
    assert f"on host {socket.gethostname()}, Slurm job 77, since" in lock_path.read_text()
    os.utime(lock_path, (old, old))
    time.sleep(0.3)  # the holder refreshes its heartbeat
    assert time.time() - lock_path.stat().st_mtime < 5
    lock.release()


def test_out_into_another_runs_directory_is_refused(run_copy, tmp_path, capsys):
    config_path, run = run_copy
    sn_config = write_config(tmp_path / "sn.yaml", "sn")
    partial = tmp_path / "partial"  # killed before its first checkpoint: a config and some scalars
    partial.mkdir()
    shutil.copy(run / "config.yaml", partial / "config.yaml")
    shutil.copy(run / "scalars.jsonl", partial / "scalars.jsonl")
    before = snapshot(partial)
    assert main(["train", str(sn_config), "--out", str(partial), "--no-progress"]) == 2
    assert "holds the start of another run (its config.yaml differs in norm)" in error_line(capsys.readouterr().err)
    assert snapshot(partial) == before
    assert main(["train", str(sn_config), "--out", str(run), "--no-progress"]) == 2
    assert "already holds a run; pass --resume" in error_line(capsys.readouterr().err)
    # the same config starts again over its own partial start, without duplicating its records
    assert main(["train", str(config_path), "--out", str(partial), "--no-progress"]) == 0
    assert logged_steps(RunFiles(partial).scalars) == [5, 10]


# -- torn writes, full and read-only disks -----------------------------------------------------------
def test_torn_last_lines_are_skipped_by_readers_and_dropped_on_resume(run_copy):
    _, run = run_copy
    files = RunFiles(run)
    with open(files.scalars, "a") as file:
        file.write('{"step": 11, "loss/d": 0.5')  # a kill in the middle of a write
    with open(files.results, "a") as file:
        file.write('{"step": 11, "gener')
    assert [r["step"] for r in files.read_results()] == [10, 10]
    assert main(["train", str(run), "--resume", "--set", "train.steps=15", "--no-progress"]) == 0
    assert logged_steps(files.scalars) == [5, 10, 15]
    assert logged_steps(files.results) == [10, 10, 15, 15]
    log = (run / "log.txt").read_text()
    assert f"dropped 1 unreadable line of {files.scalars}" in log and f"dropped 1 unreadable line of {files.results}" in log


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys, code):
    config_path, run = write_config(tmp_path / "config.yaml"), tmp_path / "run"
    real_write, writes = checkpoint.write_atomically, []

    def fail_second_write(path, write):
        writes.append(path)
        if writes.count(RunFiles(run).latest_checkpoint) < 2:
            return real_write(path, write)

        def half_then_fail(file):
            file.write(b"the first bytes of a checkpoint")
            raise OSError(code, os.strerror(code))

        return real_write(path, half_then_fail)

    monkeypatch.setattr(checkpoint, "write_atomically", fail_second_write)
    assert main(["train", str(config_path), "--out", str(run), "--no-progress"]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"cannot write checkpoint {RunFiles(run).latest_checkpoint}: {os.strerror(code)}" in line
    assert checkpoint.load(RunFiles(run).latest_checkpoint)["step"] == 5
    assert not list(RunFiles(run).checkpoints.glob(".*.tmp"))
    monkeypatch.undo()
    assert main(["train", str(run), "--resume", "--no-progress"]) == 0


def test_a_really_full_disk_keeps_the_last_checkpoint(finished_run, tmp_path, capsys):
    _, finished = finished_run
    mount = tmp_path / "small-disk"
    mount.mkdir()
    size = RunFiles(finished).latest_checkpoint.stat().st_size
    # room for everything of a run and one checkpoint, not for the second one written beside it
    room = sum(p.stat().st_size for p in finished.rglob("*") if p.is_file() and p.suffix != ".pt") + size * 3 // 2
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room // 1024 + 8}k", "tmpfs", str(mount)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        config_path = write_config(tmp_path / "config.yaml", train={**TINY["train"], "checkpoint_every": 1, "steps": 5})
        run = mount / "run"
        code = main(["train", str(config_path), "--out", str(run), "--no-progress"])
        line = error_line(capsys.readouterr().err)
        assert code == 2 and f"cannot write checkpoint {RunFiles(run).latest_checkpoint}" in line
        step = checkpoint.load(RunFiles(run).latest_checkpoint)["step"]
        assert 1 <= step < 5 and not list(RunFiles(run).checkpoints.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- integrity ---------------------------------------------------------------------------------------
def flip_a_byte_inside_the_largest_tensor(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    header = record.header_offset
    name_length, extra_length = int.from_bytes(data[header + 26:header + 28], "little"), int.from_bytes(data[header + 28:header + 30], "little")
    data[header + 30 + name_length + extra_length + record.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_bytes_and_foreign_files_as_checkpoints_are_one_line_errors(run_copy, tmp_path, capsys):
    _, run = run_copy
    latest = RunFiles(run).latest_checkpoint
    original = latest.read_bytes()
    flip_a_byte_inside_the_largest_tensor(latest)
    torch.load(latest, weights_only=True)  # PyTorch itself reads the damaged file without complaint
    for argv in (["train", str(run), "--resume", "--set", "train.steps=15"], ["sample", str(run)]):
        assert main(argv) == 2
        assert f"{latest}: checkpoint is corrupt" in error_line(capsys.readouterr().err)

    torch.save({"step": 3, "weights": torch.zeros(2)}, latest)  # some other torch file
    assert main(["train", str(run), "--resume", "--set", "train.steps=15"]) == 2
    assert "not a checkpoint written by gnbench" in error_line(capsys.readouterr().err)

    other = write_config(tmp_path / "other.yaml", model={"width": 0.25, "z_dim": 16})
    train(load_config(other), tmp_path / "other", progress=False)
    shutil.copy(RunFiles(tmp_path / "other").latest_checkpoint, latest)  # a checkpoint of another model
    assert main(["train", str(run), "--resume", "--set", "train.steps=15"]) == 2
    assert "the checkpoint does not fit this run's config" in error_line(capsys.readouterr().err)
    latest.write_bytes(original)
    assert main(["train", str(run), "--resume", "--set", "train.steps=15", "--no-progress"]) == 0


class FlatExtractor:
    """Pixels as features: enough to compute reference statistics."""

    name = "flat-test"

    def __call__(self, images):
        features = images.flatten(1)
        return features, torch.softmax(features, dim=1)


@pytest.mark.parametrize("kind", ["tensors", "folder"])
def test_the_reference_cache_key_covers_every_image(tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "tensors":
        images = torch.rand(10, 1, 4, 4)
        make = lambda: TensorImageDataset(images, torch.zeros(10), name="t", num_classes=0)  # noqa: E731
    else:
        for index in range(10):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
        make = lambda: gn_plugin.create("dataset", "folder", root=str(tmp_path), resolution=4)  # noqa: E731
    before = reference.reference_cache_path(str(tmp_path), make(), FlatExtractor())
    if kind == "tensors":
        images[3] = 1 - images[3]  # neither the first, the middle nor the last image
    else:
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "3.png")
    assert reference.reference_cache_path(str(tmp_path), make(), FlatExtractor()) != before


def test_a_corrupt_reference_cache_is_computed_again(tmp_path):
    data = TensorImageDataset(torch.rand(10, 1, 4, 4), torch.zeros(10), name="t", num_classes=0)
    path = reference.reference_cache_path(str(tmp_path), data, FlatExtractor())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 not really a zip file")  # a write cut short
    with pytest.warns(UserWarning, match=r"unreadable reference statistics \(.*\); computing them again"):
        computed = reference.dataset_reference(data, FlatExtractor(), batch_size=4, cache=str(tmp_path))
    np.testing.assert_allclose(computed.mu, data.images.flatten(1).mean(0).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(reference.load_reference(path).sigma, computed.sigma)  # and cached again


def test_a_corrupt_image_met_by_a_dataloader_worker_is_one_line_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    (tmp_path / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n but the rest is gone")
    data = gn_plugin.create("dataset", "folder", root=str(tmp_path), resolution=8)
    stream = BatchStream(data, batch_size=3, seed=0, device=torch.device("cpu"), num_workers=2)
    with pytest.raises(GnPluginError) as error:
        for _ in range(2):  # one epoch
            next(stream)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"dataset 'folder': {tmp_path / '4.png'}: cannot read image")


# -- bench cells -------------------------------------------------------------------------------------
def test_every_distinct_cell_gets_its_own_id_and_folder(tmp_path):
    path = bench_spec_file(tmp_path, grid={
        "norm": [{"name": "gn-cr", "consistency_weight": 1.0}, {"name": "gn-cr", "consistency_weight": 10.0}],
        "data.root": ["a b", "a-b"],  # two values that read the same in a folder name
    })
    cells = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    assert len({c.id for c in cells}) == len({c.run_dir for c in cells}) == len({c.group for c in cells}) == 4
    weights_by_id = {c.id: c.config.norm.options["consistency_weight"] for c in cells}
    assert sorted(set(weights_by_id.values())) == [1.0, 10.0]
    assert all(f"consistency_weight-{w}" in i for i, w in weights_by_id.items())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("grid:\n  model.options.depth: [2, 2]\n", "grid key 'model.options.depth' lists 2 more than once"),
        ("methods:\n  a: {norm: gn}\n  b: {norm: gn}\n", "cells 'a__seed0' and 'b__seed0' have the same config"),
        ("methods:\n  a: {norm: gn}\n  a: {norm: sn}\n", "key 'a' is given twice in one mapping"),
    ],
    ids=["duplicate-grid-value", "identical-methods", "duplicate-method-key"],
)
def test_identical_cells_and_duplicate_keys_are_refused_at_spec_load(tmp_path, text, expected):
    path = bench_spec_file(tmp_path)
    path.write_text(path.read_text() + text)
    with pytest.raises(GnPluginError) as error:
        bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "method, expected",
    [
        ({"norm": {"name": "gn-cr", "consistency_wieght": 1.0}}, "unknown option 'consistency_wieght'; did you mean 'consistency_weight'?"),
        ({"regularizers": [{"name": "gp", "weight": -10.0}]}, "weight must be a number >= 0, got -10.0"),
    ],
    ids=["unknown-option", "negative-weight"],
)
def test_the_bench_checks_every_cell_before_it_runs_any(tmp_path, method, expected):
    path = bench_spec_file(tmp_path, methods={"gn": {"norm": "gn"}, "bad": method})
    with pytest.raises(GnPluginError) as error:
        bench.run_benchmark(path, jobs=1, out=tmp_path / "out", log=lambda line: None)
    assert str(error.value).startswith("cell bad__seed0: ") and expected in str(error.value)
    assert not (tmp_path / "out" / "runs").exists()


def test_the_bench_recovers_from_or_names_every_damaged_file_it_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("GN_PLUGIN_CACHE", str(tmp_path / "cache"))
    path = bench_spec_file(tmp_path, methods={"gn": {"norm": "gn"}})
    (cell,) = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    root = cell.root
    root.mkdir(parents=True)
    cached = bench.floor_cache_path(cell.config, bench.build_dataset(cell.config))
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text('{"format": 3, "draws": [{"fid": 1.0}')  # cut short: a cache, computed again
    floors = bench.compute_floors([cell], log=lambda line: None)
    assert json.loads(cached.read_text()) == floors[bench_spec.floor_key(cell.config)]

    (root / "invocations.jsonl").write_text('{"started_at": "x", "jobs": 1}\n{"started_at": "y", "jo')
    assert invocations.read_invocations(root) == [{"started_at": "x", "jobs": 1}]

    cell.run_dir.mkdir(parents=True)
    RunFiles(cell.run_dir).append_result({"step": 4, "generator": "ema", "fid": 1.0})
    cell.files.summary.write_text('{"steps": 4, "wall_')
    with pytest.raises(GnPluginError, match=rf"^{cell.files.summary}: unreadable"):
        report.run_rows(cell, ["fid"], None)


# -- plugins -----------------------------------------------------------------------------------------
def test_a_factory_that_raises_names_its_plugin(make_distribution):
    make_distribution("gnp-raising", {"gnp_raising": "def factory(discriminator):\n    raise ValueError('boom')\n"},
                      {"gn_plugin.norms": {"raising": "gnp_raising:factory"}})
    with pytest.raises(GnPluginError, match=r"^norm 'raising' from 'gnp-raising' failed with these options: ValueError: boom$"):
        gn_plugin.create("norm", "raising", torch.nn.Linear(2, 1))


def test_a_plugin_that_exits_at_import_is_isolated(make_distribution):
    make_distribution("gnp-exiting", {"gnp_exiting": "import sys\nsys.exit(3)\n"},
                      {"gn_plugin.norms": {"exiting": "gnp_exiting:factory"}})
    with pytest.raises(GnPluginError, match=r"norm plugin 'exiting' from distribution 'gnp-exiting' .* SystemExit: 3"):
        gn_plugin.get("norm", "exiting")
    assert isinstance(gn_plugin.create("norm", "gn", torch.nn.Linear(2, 1)), torch.nn.Module)


def test_a_plugin_claiming_a_builtin_name_leaves_the_builtin_in_place(make_distribution):
    make_distribution("gnp-squatter", {"gnp_squatter": "def factory(discriminator):\n    return 'the squatter'\n"},
                      {"gn_plugin.norms": {"gn": "gnp_squatter:factory"}})
    with pytest.warns(NameClash, match=r"norm 'gn' is also claimed by 'gnp-squatter' .*'gn@gnp-squatter' selects the other"):
        builtin = gn_plugin.get("norm", "gn")
    assert builtin.__module__ == "gn_plugin.norms.gradnorm"
    assert gn_plugin.create("norm", "gn@gnp-squatter", torch.nn.Linear(2, 1)) == "the squatter"
    assert load_config(DIGITS / "gn.yaml", ["norm=gn@gnp-squatter"]).norm.name == "gn@gnp-squatter"


# -- bad input: one line, non-zero exit, nothing written ---------------------------------------------
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7)
)


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Case -> (gnbench arguments after `train CONFIG --out RUN`, or a whole command line; expected text)."""
    config = write_config(tmp_path / "good.yaml")

    def file(name: str, content: str | bytes) -> str:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    bomb = "  " + ALIAS_BOMB.replace("\n", "\n  ")
    deep = "data:\n  options:\n    x: " + "[" * 3000 + "]" * 3000 + "\n"  # past Python's recursion limit
    cases = {
        "duplicate-key": (file("dup.yaml", f"base: {config}\ntrain:\n  steps: 3\ntrain:\n  seed: 1\n"), "key 'train' is given twice"),
        "duplicate-key-in-base": (file("child.yaml", "base: dupbase.yaml\n"), "key 'steps' is given twice"),
        "alias-bomb": (file("bomb.yaml", f"base: {config}\nmodel:\n  options:\n    bomb:\n  {bomb}\n"), "values once YAML aliases are expanded"),
        "deep-nesting": (file("deep.yaml", f"base: {config}\n{deep}"), "nested deeper than 32 levels"),
        "binary-file": (file("binary.yaml", bytes(range(256))), "not a UTF-8 text file"),
        "latin-1-base": (file("latin.yaml", "base: latin1.yaml\n"), "latin1.yaml: not a UTF-8 text file"),
        "python-tag": (file("tag.yaml", f"base: {config}\nseed: !!python/object/apply:os.system [echo]\n"), "could not determine a constructor"),
    }
    file("dupbase.yaml", f"base: {config}\ntrain:\n  steps: 3\n  steps: 4\n")
    file("latin1.yaml", "# café\ntrain: {}\n".encode("latin-1"))
    cases = {name: ([path], expected) for name, (path, expected) in cases.items()}
    sets = {
        "set-unclosed-list": (["train.steps=[1"], "--set 'train.steps=[1': invalid YAML"),
        "set-scalar-then-deeper": (["train=5", "train.steps=3"], "an earlier --set gave train a value"),
        "set-python-tag": (["train.seed=!!python/object/apply:os.system [echo]"], "could not determine a constructor"),
        "fixed-argument": (["data.options.split=test"], "data.options: 'split' cannot be an option"),
        "fixed-model-argument": (["model.options.z_dim=4"], "model.options: 'z_dim' cannot be an option"),
        "steps-as-boolean": (["train.steps=true"], "train.steps: expected a number, got true"),
        "negative-depth": (["model.options.depth=-1"], "model 'mlp' from 'gn-plugin' failed with these options: ValueError: depth must be >= 0"),
        "negative-weight": (["regularizers=[{name: gp, weight: -10}]"], "weight must be a number >= 0, got -10"),
        "huge-size": (["model.z_dim=10000000000000"], "model 'mlp' from 'gn-plugin' failed with these options"),
    }
    cases.update({name: ([str(config), "--set", *items], expected) for name, (items, expected) in sets.items()})
    if not torch.cuda.is_available():
        cases["cuda-without-gpu"] = ([str(config), "--set", "train.device=cuda"], "train.device: 'cuda' but no CUDA GPU")
    return cases


BAD_INPUT_NAMES = [
    "duplicate-key", "duplicate-key-in-base", "alias-bomb", "deep-nesting", "binary-file", "latin-1-base", "python-tag",
    "set-unclosed-list", "set-scalar-then-deeper", "set-python-tag", "fixed-argument", "fixed-model-argument",
    "steps-as-boolean", "negative-depth", "negative-weight", "huge-size", "cuda-without-gpu",
]


@pytest.mark.parametrize("case", BAD_INPUT_NAMES)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    cases = bad_inputs(tmp_path)
    if case not in cases:
        pytest.skip("this machine has a GPU")
    arguments, expected = cases[case]
    out = tmp_path / "run"
    assert main(["train", arguments[0], "--out", str(out), "--no-progress", *arguments[1:]]) == 2
    assert expected in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_bad_targets_and_counts_are_one_line(finished_run, tmp_path, capsys):
    config_path, run = finished_run
    regular_file = tmp_path / "a-file"
    regular_file.write_text("not a directory")
    assert main(["train", str(config_path), "--out", str(regular_file)]) == 2
    assert f"run directory {regular_file} is a file, not a directory" in error_line(capsys.readouterr().err)
    assert main(["sample", str(run), "--count", "0", "--out", str(tmp_path / "grid.png")]) == 2
    assert "--count must be at least 1, got 0" in error_line(capsys.readouterr().err)


def test_the_keys_that_may_change_on_resume_are_the_documented_ones():
    page = (REPO / "docs" / "runs.md").read_text()
    table = page[page.index("| key | why it may change |"):page.index("None of them changes")]
    documented = {key.strip("`") for key in re.findall(r"`([\w.*]+)`", table) if "." in key and key[0].islower()}
    assert documented == {k if "." in k else f"{k}.*" for k in RESUMABLE_KEYS}
