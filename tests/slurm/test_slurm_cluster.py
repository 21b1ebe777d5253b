"""``gnbench bench --launcher slurm`` on a real one-node Slurm cluster (``.ci/slurm/start``).

Skipped unless ``GN_PLUGIN_SLURM_CLUSTER`` is set (``source $GN_SLURM_DIR/env`` after the start
script). Tiny digits cells train on the CPU (``train.device: cpu``, one thread) while Slurm hands
them stand-in GPUs (null devices). Every scenario is submitted as early as it can be, so that they
overlap; each test then waits for its own:

- pair: two cells at once, each with its own CUDA_VISIBLE_DEVICES; one of them is sent back by
  ``scontrol requeue`` while it runs; then the bench command again writes the report, whose
  results.csv metrics equal a local bench's of the same spec;
- time limit: a cell whose job reaches its time limit (cut to 35 s from now while it runs) is
  requeued and ends bit-identical to an uninterrupted run;
- preemption: a cell in the ``low`` partition, preempted by a job in ``high``, ends bit-identical;
- scancel: the cell ends cancelled with its checkpoint, and the status says so.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from gn_plugin.experiments import slurm
from gn_plugin.experiments import spec as bench_spec

from run_weights import assert_same_weights, checkpoint_step

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not os.environ.get("GN_PLUGIN_SLURM_CLUSTER"), reason="no Slurm cluster (.ci/slurm/start)"),
]

REPO = Path(__file__).resolve().parents[2]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = {
    "train.batch_size_d": 16, "train.batch_size_g": 16, "train.device": "cpu", "train.log_every": 50,
    "train.sample_every": 100_000, "train.sample_count": 4, "train.checkpoint_every": 50, "eval.every": 750,
    "eval.num_samples": 64, "eval.batch_size": 64, "eval.metrics": ["fid", "kid"], "model.width": 0.25,
}
GN = {"gn": {"norm": "gn"}}


def write_spec(folder: Path, name: str, steps: int, launcher: dict, methods: dict = GN, **settings) -> Path:
    spec = {"name": name, "base": str(REPO / "yaml_configs" / "digits" / "_recipe.yaml"),
            "set": {**TINY, "train.steps": steps, **settings}, "methods": methods, "seeds": [0], "metrics": ["fid", "kid"],
            "launcher": {"cpus_per_cell": 1, "signal_delay_s": 30, **launcher}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def gnbench(*arguments: str, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "gn_plugin.cli", *arguments], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def submit(spec: Path, out: Path) -> list[bench_spec.Cell]:
    gnbench("bench", str(spec), "--out", str(out), "--launcher", "slurm")
    return bench_spec.expand(bench_spec.load_spec(spec), spec, out)


def wait_until(condition, timeout: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def states(cells) -> dict[str, str]:
    return {status.cell.id: status.state for status in slurm.cell_states(cells)}


def settled(cells) -> bool:
    return not {"pending", "running", "requeued"} & set(states(cells).values())


def slurm_job(cell) -> str:
    return slurm.read_state(cell)["job_id"]


class Scenarios:
    """Everything submitted or started in the background, shared by the tests of this module."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        pair = write_spec(folder, "pair", 3000, {"gpus_per_cell": 1}, {"gn": {"norm": "gn"}, "sn": {"norm": "sn"}})
        long_cell = {"time_min": 10, "gpus_per_cell": 0, "max_num_timeout": 8}
        self.specs = {
            "pair": pair,
            # the full-width MLP: a few times slower per step, so that the cut lands while it trains
            "time": write_spec(folder, "time", 3000, long_cell, **{"model.width": 1.0}),
            "preempt": write_spec(folder, "preempt", 3000, {"partition": "low", "gpus_per_cell": 1, "time_min": 10}),
            "cancel": write_spec(folder, "cancel", 100_000, {"time_min": 10, "gpus_per_cell": 0}),
        }
        self.out = {name: folder / name for name in self.specs}
        self.cells = {"pair": submit(pair, self.out["pair"])}
        self.pair_running: list[dict] = []
        self.pair_watch = threading.Thread(target=self.requeue_one_of_the_pair, daemon=True)
        self.pair_watch.start()
        self.cells.update({name: submit(self.specs[name], self.out[name]) for name in ("time", "cancel")})
        # what the cluster's results must equal, computed here meanwhile with the cells' one thread
        self.local_bench = subprocess.Popen(
            [sys.executable, "-m", "gn_plugin.cli", "bench", str(pair), "--out", str(folder / "local"), "--jobs", "1"],
            env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        # its gn cell is also the uninterrupted run of the preempted cell (the same config)
        self.straight = folder / "local" / "runs" / "gn__seed0"
        self.straight_time = subprocess.Popen(
            [sys.executable, "-m", "gn_plugin.cli", "train", str(self.cells["time"][0].config_path), "--out",
             str(folder / "straight-time"), "--no-progress"],
            env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.preempting_job: str | None = None
        self.time_limit_cut = False
        self.time_limit = threading.Thread(target=self.cut_time_limit, daemon=True)
        self.time_limit.start()

    def requeue_one_of_the_pair(self) -> None:
        """Once both cells of the pair run with a checkpoint, note what their jobs wrote and send the
        first one back with `scontrol requeue`."""
        cells = self.cells["pair"]
        wait_until(lambda: all(slurm.read_state(c).get("state") == "running" and c.files.latest_checkpoint.is_file()
                               for c in cells), 180, "both cells running with a checkpoint", poll_s=0.05)
        records = [slurm.read_state(cell) for cell in cells]
        subprocess.run(["scontrol", "requeue", records[0]["job_id"]], check=True)
        self.pair_running = records

    def cut_time_limit(self) -> None:
        """Slurm's own time limit: once the cell runs with a checkpoint, its job's limit is cut to 35 s
        from now (a limit of a minute from the start would let Slurm's early warning arrive before the
        job's process could take it); it goes back to 10 minutes once the cell has been requeued."""
        (cell,) = self.cells["time"]
        wait_until(lambda: slurm.read_state(cell).get("state") == "running" and cell.files.latest_checkpoint.is_file(),
                   180, "the cell running with a checkpoint")
        job = slurm_job(cell)
        elapsed = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True, check=True).stdout
        seconds = sum(int(part) * 60**i for i, part in enumerate(reversed(elapsed.strip().split(":")))) + 35
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={seconds // 60}:{seconds % 60:02d}"], check=True)
        wait_until(lambda: "stopped by SIGUSR2" in cell.log_path.read_text(), 240, "the time limit's signal")
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
        self.time_limit_cut = True

    def submit_preempted_cell(self) -> None:
        """The low-partition cell, once the pair's GPUs are free; a job in `high` that needs both GPUs
        preempts it as soon as it has a checkpoint."""
        self.cells["preempt"] = submit(self.specs["preempt"], self.out["preempt"])
        (cell,) = self.cells["preempt"]

        def preempt() -> None:
            wait_until(lambda: cell.files.latest_checkpoint.is_file(), 240, "the cell's first checkpoint")
            result = subprocess.run(["sbatch", "--parsable", "-p", "high", "--gres=gpu:2", "-o", str(self.folder / "high-%j.out"), "--wrap", "sleep 2"],
                                    capture_output=True, text=True, check=True)
            self.preempting_job = result.stdout.strip()

        self.preemptor = threading.Thread(target=preempt, daemon=True)
        self.preemptor.start()

    def reference(self, process: subprocess.Popen) -> None:
        if process.returncode is None:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    runs = Scenarios(tmp_path_factory.mktemp("cluster"))
    yield runs
    subprocess.run(["scancel", "--quiet", "--user", os.environ.get("USER", "root")], check=False)
    for process in (runs.local_bench, runs.straight_time):
        if process.poll() is None:
            process.kill()


def read_rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(path) as file:
        return {(r["method"], r["seed"], r["generator"]): r for r in csv.DictReader(file)}


def metrics(row: dict[str, str]) -> dict[str, str]:
    """A results.csv row's metric values and the steps they come from (not its wall times)."""
    return {k: v for k, v in row.items() if k.startswith(("best_", "final_")) and "time" not in k}


# -- the scenarios -----------------------------------------------------------------------------------
def test_two_cells_running_at_once_get_different_gpus_and_scontrol_requeue_resumes_one(scenarios):
    cells = scenarios.cells["pair"]
    scenarios.pair_watch.join(timeout=200)
    records = scenarios.pair_running
    assert records and {r["state"] for r in records} == {"running"}, "the pair never ran at once (see requeue_one_of_the_pair)"
    assert sorted(r["gpus"] for r in records) == ["0", "1"]  # one stand-in GPU each, at the same time
    gn = cells[0]
    wait_until(lambda: settled(cells), 300, "the pair to finish")
    assert states(cells) == {"gn__seed0": "done", "sn__seed0": "done"}
    log = gn.log_path.read_text()
    assert log.count(" Slurm job ") >= 2 and "resumed at step" in log  # started again, from its checkpoint
    scenarios.submit_preempted_cell()  # the GPUs are free now


def test_the_bench_again_after_completion_writes_a_local_bench_s_metrics(scenarios):
    out = gnbench("bench", str(scenarios.specs["pair"]), "--out", str(scenarios.out["pair"]), "--launcher", "slurm")
    assert "2 runs in" in out and "wrote" in out
    scenarios.reference(scenarios.local_bench)
    cluster, local = read_rows(scenarios.out["pair"] / "results.csv"), read_rows(scenarios.folder / "local" / "results.csv")
    assert cluster.keys() == local.keys() and len(cluster) == 4
    for key in cluster:
        assert metrics(cluster[key]) == metrics(local[key]), key
    assert metrics(cluster[("gn", "0", "ema")])["final_fid"]


def test_scancel_leaves_a_cancelled_cell_with_its_checkpoint(scenarios):
    (cell,) = scenarios.cells["cancel"]
    wait_until(lambda: cell.files.latest_checkpoint.is_file() and states([cell])[cell.id] == "running", 180,
               "the cell running with a checkpoint")
    subprocess.run(["scancel", slurm_job(cell)], check=True)
    wait_until(lambda: slurm.read_state(cell).get("state") == "cancelled", 120, "the cancelled cell to end")
    step = checkpoint_step(cell.run_dir)
    out = gnbench("bench", str(scenarios.specs["cancel"]), "--out", str(scenarios.out["cancel"]), "--launcher", "slurm", "--status")
    assert f"gn__seed0: cancelled (job {slurm_job(cell)}): stopped by SIGTERM; its checkpoint at step {step} is kept" in out
    assert step >= 50 and not cell.finished


def test_a_cell_cut_by_the_time_limit_is_requeued_and_ends_bit_identical(scenarios):
    (cell,) = scenarios.cells["time"]
    scenarios.time_limit.join(timeout=400)
    assert scenarios.time_limit_cut, "the time limit was not cut (see cut_time_limit)"
    wait_until(lambda: settled([cell]), 300, "the time-limited cell to finish")
    assert states([cell]) == {cell.id: "done"}
    log = cell.log_path.read_text()
    assert "stopped by SIGUSR2 at step" in log and "resumed at step" in log
    scenarios.reference(scenarios.straight_time)
    assert_same_weights(cell.run_dir, scenarios.folder / "straight-time")


def test_a_preempted_cell_is_requeued_and_ends_bit_identical(scenarios):
    (cell,) = scenarios.cells["preempt"]
    wait_until(lambda: scenarios.preempting_job is not None and settled([cell]), 420, "the preempted cell to finish")
    assert states([cell]) == {cell.id: "done"}
    log = cell.log_path.read_text()
    assert "stopped by SIGUSR2 at step" in log and "resumed at step" in log
    def history(job: str) -> list[str]:
        return subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job],
                              capture_output=True, text=True, check=True).stdout.split()

    # sent back while the job in `high` ran, long before its own 10-minute limit
    assert "REQUEUED" in history(slurm_job(cell)) and history(scenarios.preempting_job) == ["COMPLETED"]
    scenarios.reference(scenarios.local_bench)
    assert cell.config.to_dict() == scenarios.cells["pair"][0].config.to_dict()
    assert_same_weights(cell.run_dir, scenarios.straight)
