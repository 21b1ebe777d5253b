"""``gnbench bench --launcher slurm`` without a cluster: settings, plan, cell states, and the signal and
requeue protocol under submitit's LocalExecutor (SIGUSR2 ahead of the time limit, requeue by restart).

The same protocol on a real Slurm cluster: tests/slurm/test_slurm_cluster.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from gn_plugin.cli import main
from gn_plugin.experiments import bench, slurm, slurm_job
from gn_plugin.experiments import spec as bench_spec

from run_weights import assert_same_weights, checkpoint_step

REPO = Path(__file__).resolve().parents[1]
#: tiny digits cells on the CPU that write a checkpoint every 50 steps
TINY = {
    "train.steps": 400, "train.batch_size_d": 16, "train.batch_size_g": 16, "train.device": "cpu",
    "train.log_every": 50, "train.sample_every": 100_000, "train.sample_count": 4, "train.checkpoint_every": 50,
    "eval.every": 0, "eval.num_samples": 64, "eval.batch_size": 64, "eval.metrics": ["fid"], "model.width": 0.25,
}


def write_spec(folder: Path, **fields) -> Path:
    spec = {"name": "t", "base": str(REPO / "yaml_configs" / "digits" / "_recipe.yaml"), "set": dict(TINY),
            "methods": {"gn": {"norm": "gn"}, "sn": {"norm": "sn"}}, **fields}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def prepared(folder: Path, overrides: list[str] | None = None, **fields):
    path = write_spec(folder, **fields)
    return bench_spec.prepare(path, folder / "out", overrides)


def error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- settings, plan --------------------------------------------------------------------------------
def test_without_submitit_the_launcher_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    path = write_spec(tmp_path)
    assert main(["bench", str(path), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    assert "pip install gn_plugin[slurm]" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize("launcher, options, expected", [
    ({"partitoin": "gpu"}, [], "launcher.partitoin"),
    ({"time_min": 0}, [], "launcher.time_min"),
    ({}, ["time_min=soon"], "--launcher-set: time_min"),
    ({}, ["nodes=2"], "--launcher-set: nodes"),
])
def test_bad_launcher_settings_are_one_line_errors_naming_the_key(tmp_path, capsys, launcher, options, expected):
    path = write_spec(tmp_path, launcher=launcher)
    extra = ["--launcher-set", *options] if options else []
    assert main(["bench", str(path), "--out", str(tmp_path / "out"), "--launcher", "slurm", *extra]) == 2
    assert expected in error_line(capsys.readouterr().err)


def test_launcher_options_without_the_slurm_launcher_are_refused(tmp_path, capsys):
    assert main(["bench", str(write_spec(tmp_path)), "--wait"]) == 2
    assert "--launcher slurm" in error_line(capsys.readouterr().err)


def test_command_line_settings_override_the_spec_and_defaults_follow_the_cells(tmp_path):
    spec, cells = prepared(tmp_path, launcher={"partition": "gpu", "time_min": 60, "sbatch": {"exclude": "n7"}})
    settings = slurm.launcher_settings(spec, ["time_min=240", "qos=high", "sbatch={exclude: n8}"])
    assert (settings.partition, settings.time_min, settings.qos, settings.sbatch) == ("gpu", 240, "high", {"exclude": "n8"})
    assert slurm.gpus_per_cell(settings, cells) == 0  # the cells train on the CPU
    _, cuda_cells = prepared(tmp_path, ["train.device=auto", "data.num_workers=5"])
    assert slurm.gpus_per_cell(settings, cuda_cells) == 1
    assert slurm.cpus_per_cell(settings, cuda_cells) == 6


def test_the_plan_estimates_from_measured_steps_or_perf_figures_and_sizes_the_requeues(tmp_path):
    spec, cells = prepared(tmp_path, ["train.steps=10000"], launcher={"time_min": 60, "signal_delay_s": 120})
    settings = slurm.launcher_settings(spec, [])
    gn = [c for c in cells if c.method == "gn"][0]
    gn.run_dir.mkdir(parents=True)
    gn.files.results.write_text(json.dumps({"step": 1000, "generator": "raw", "wall_time_s": 900.0}) + "\n")
    perf = tmp_path / "perf.json"
    perf.write_text(json.dumps({"device": "a test GPU", "rows": [
        {"model": "mlp", "group": "fp32", "method": "sn", "seconds": 0.5},
        {"model": "mlp", "group": "naive", "method": "sn", "seconds": 9.0},
    ]}))
    estimates = {e.cell.method: e for e in slurm.estimate(cells, settings, bench.steps_done)}
    # gn: 0.9 s per step measured over its first 1,000 steps, 10,000 - 0 logged steps left
    assert estimates["gn"].seconds == pytest.approx(9000.0) and "measured: 1000 steps of gn__seed0" in estimates["gn"].how
    assert estimates["sn"].seconds is None
    assert slurm.max_num_timeout(list(estimates.values()), settings) == 3 + 2 - 1  # 9,000 s in slots of 3,300 s: 3
    settings = slurm.launcher_settings(spec, [f"perf={perf}"])
    estimates = {e.cell.method: e for e in slurm.estimate(cells, settings, bench.steps_done)}
    assert estimates["sn"].seconds == pytest.approx(5000.0) and "a test GPU" in estimates["sn"].how
    lines = slurm.plan_lines(list(estimates.values()), settings, gpus=1, cpus=4, timeouts=4)
    assert "gn: 1 cell(s), about 2.50 h each (2.50 GPU-hours, 3 job(s) of 60 min)" in lines[1]
    assert lines[-1] == "  total: about 3.89 GPU-hours"
    assert slurm.launcher_settings(spec, ["max_num_timeout=9"]).max_num_timeout == 9


# -- cell states -----------------------------------------------------------------------------------
def write_state(cell, state: str, **record) -> None:
    """What a cell's job writes about it."""
    slurm_job.write_json(str(slurm.state_path(cell)), {"state": state, **record})


def test_each_cell_state_combines_its_summary_its_job_s_record_and_slurm(tmp_path):
    _, cells = prepared(tmp_path)
    cell = cells[0]
    assert slurm.status_of(cell, None, "UNKNOWN").state == "not submitted"
    assert slurm.status_of(cell, "7_0", "PENDING").state == "pending"
    write_state(cell, "running", job_id="7_0", host="node3", gpus="1")
    running = slurm.status_of(cell, "7_0", "RUNNING")
    assert (running.state, running.detail) == ("running", "on node3, CUDA_VISIBLE_DEVICES=1")
    assert slurm.status_of(cell, "7_0", "PENDING").state == "requeued"  # it ran before: `scontrol requeue`
    write_state(cell, "requeued", job_id="7_0", host="node3", reason="time limit or preemption; resumes from step 50")
    assert slurm.status_of(cell, "7_0", "PENDING").line() == "gn__seed0: requeued (job 7_0): time limit or preemption; resumes from step 50"
    write_state(cell, "cancelled", job_id="7_0", reason="stopped by SIGTERM; its checkpoint at step 50 is kept")
    assert slurm.status_of(cell, "7_0", "CANCELLED").state == "cancelled"
    assert slurm.status_of(cell, "8_0", "CANCELLED").detail == "cancelled before it started"  # another job's record
    write_state(cell, "running", job_id="7_0", host="node3")
    assert slurm.status_of(cell, "7_0", "CANCELLED").detail == "stopping: writing its checkpoint"
    write_state(cell, "running", job_id="7_0", host="node3")
    cell.log_path.parent.mkdir(parents=True)
    cell.log_path.write_text("step 50\nKilled\n")
    vanished = slurm.status_of(cell, "7_0", "NODE_FAIL")
    assert vanished.state == "failed" and "vanished (Slurm says NODE_FAIL); last log line: Killed" in vanished.detail
    cell.run_dir.mkdir(parents=True)
    cell.files.summary.write_text("{}")
    assert slurm.status_of(cell, "7_0", "RUNNING").state == "done"


# -- the task on the node --------------------------------------------------------------------------
def straight_run(config_path: Path, run_dir: Path) -> None:
    """The uninterrupted run of a cell, with the cell's one thread (float sums depend on the thread count)."""
    subprocess.run([sys.executable, "-m", "gn_plugin.cli", "train", str(config_path), "--out", str(run_dir), "--no-progress"],
                   env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, check=True, capture_output=True)


def read_states(cell, seen: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        state = slurm.read_state(cell).get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        time.sleep(0.05)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_cell_signalled_like_a_time_limit_is_requeued_and_ends_bit_identical(tmp_path):
    """Under submitit's LocalExecutor, SIGUSR2 to every process of the job (as Slurm sends it) makes the
    cell checkpoint and the job ask for a requeue; the restarted job resumes and the cell ends as an
    uninterrupted run."""
    spec, cells = prepared(tmp_path, ["train.steps=1500"], methods={"gn": {"norm": "gn"}})
    (cell,) = cells
    settings = slurm.launcher_settings(spec, ["signal_delay_s=30", "time_min=30"])
    seen, stop = [], threading.Event()
    watcher = threading.Thread(target=read_states, args=(cell, seen, stop))
    watcher.start()
    try:
        (job,) = slurm.submit(spec, cells, settings, steps_done=bench.steps_done, log=lambda line: None, cluster="local")
        deadline = time.monotonic() + 120
        while not (cell.files.latest_checkpoint.is_file() and slurm.read_state(cell).get("state") == "running"):
            assert time.monotonic() < deadline and not job.done(), cell.log_path.read_text()
            time.sleep(0.05)
        child = slurm.read_state(cell)["pid"]
        for pid in (parent(child), child):
            os.kill(pid, signal.SIGUSR2)
        while not job.done() and time.monotonic() < deadline + 120:
            time.sleep(0.2)
        assert job.result() == "done"
    finally:
        stop.set()
        watcher.join()
    assert seen[0] == "running" and "requeued" in seen and seen[-1] == "done", seen
    log = cell.log_path.read_text()
    assert "stopped by SIGUSR2 at step" in log and "resumed at step" in log and "at once" not in log
    straight_run(cell.config_path, tmp_path / "straight")
    assert_same_weights(cell.run_dir, tmp_path / "straight")


def test_a_cancelled_cell_keeps_its_checkpoint_and_a_crashed_one_says_why(tmp_path):
    spec, cells = prepared(tmp_path, ["train.steps=100000"], methods={"gn": {"norm": "gn"}})
    (cell,) = cells
    task = slurm.cell_job(cell, gpus=0, signal_delay_s=30)

    def cancel_when_checkpointed() -> None:  # what scancel does: SIGTERM to every process of the job
        while not cell.files.latest_checkpoint.is_file():
            time.sleep(0.05)
        os.kill(slurm.read_state(cell)["pid"], signal.SIGTERM)

    threading.Thread(target=cancel_when_checkpointed, daemon=True).start()
    assert task() == "cancelled"
    record = slurm.read_state(cell)
    step = checkpoint_step(cell.run_dir)
    assert step >= 50 and record["reason"] == f"stopped by SIGTERM; its checkpoint at step {step} is kept"
    status = slurm.status_of(cell, record["job_id"], "CANCELLED")
    assert (status.state, status.detail) == ("cancelled", record["reason"])
    # a crash: the job's next start fails on a damaged checkpoint, and the state names the log's last line
    cell.files.latest_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="failed"):
        slurm.cell_job(cell, gpus=0, signal_delay_s=30)()
    status = slurm.status_of(cell, slurm.read_state(cell)["job_id"], "FAILED")
    assert status.state == "failed" and "exit 2: gnbench: error:" in status.detail and str(cell.log_path) in status.detail
    assert slurm.RESUBMITTED >= {"failed", "cancelled"}


def test_status_lists_every_cell_and_submits_nothing(tmp_path, capsys):
    path = write_spec(tmp_path)
    out = tmp_path / "out"
    assert main(["bench", str(path), "--out", str(out), "--launcher", "slurm", "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["gn__seed0: not submitted", "sn__seed0: not submitted", f"2 runs in {out}: 2 not submitted"]
    assert lines[3].startswith("2 cell(s) to submit: run `gnbench bench")
    assert not (out / "slurm" / "submissions.jsonl").exists()
