"""``gnbench bench SPEC --launcher slurm``: a benchmark's cells as one Slurm job array, through submitit.

Submitting: the cells that are neither finished nor queued or running go out as one job array, one
task per cell (:func:`submit`). The command prints the plan (estimated GPU-hours), the array's job
id and how to follow it, then returns (``--wait`` follows the array until it is done). Running the
same command again shows each cell's state (:func:`cell_states`), submits the cells that failed,
were cancelled or vanished, and once every cell has its summary the bench writes its report.

On the node each task is a :class:`~gn_plugin.experiments.slurm_job.CellJob`. When its job starts
it decides between a new run and a resume (a checkpoint is there) and runs ``gnbench train`` as a
child process. Slurm sends SIGUSR2 to every process of the job ahead of a time limit or a
preemption: the child checkpoints and exits, and the task's ``checkpoint()`` waits for it and hands
submitit the requeue. ``scancel`` sends SIGTERM: the child checkpoints and exits, and the cell ends
cancelled. A crash ends the cell failed, with its
log's last line; the next ``gnbench bench`` resubmits it.

What the cells did is kept in ``<out>/slurm/``: ``submissions.jsonl`` (each array's job id and its
cells, written by the submitting command), ``cells/<cell>.json`` (written by the cell's job: state,
job id, host, GPUs, reason) and ``jobs/`` (submitit's scripts, pickles and logs).
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from gn_plugin.config import format_validation_error, parse_overrides
from gn_plugin.errors import GnPluginError
from gn_plugin.experiments import slurm_job
from gn_plugin.experiments.spec import BenchSpec, Cell, LauncherSettings
from gn_plugin.training.run_dir import LOCK_FILE, RunLock, append_jsonl, read_jsonl

SLURM_DIR = "slurm"
POLL_S = 10.0  # how often --wait asks Slurm and reads the runs' logs
#: Slurm job states in which a cell is still to run or running (sacct's first word)
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING", "SUSPENDED",
          "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT"}
RUNNING = {"RUNNING", "COMPLETING"}
#: the cell states the bench resubmits
RESUBMITTED = {"not submitted", "failed", "cancelled"}


def require_submitit() -> Any:
    """The submitit module; a one-line error naming the extra when it is not installed."""
    try:
        import submitit
    except ImportError:
        raise GnPluginError("--launcher slurm needs submitit: pip install gn_plugin[slurm]") from None
    return submitit


def launcher_settings(spec: BenchSpec, overrides: list[str] | None) -> LauncherSettings:
    """The spec's ``launcher:`` section with the command line's ``KEY=VALUE`` items on top."""
    items = parse_overrides([f"launcher.{item}" for item in overrides or []]).get("launcher", {})
    try:
        return LauncherSettings.model_validate({**spec.launcher.model_dump(exclude_unset=True), **items})
    except ValidationError as exc:
        raise GnPluginError(format_validation_error(exc, "--launcher-set", LauncherSettings)) from None


def trains_on_cuda(cell: Cell) -> bool:
    return cell.config.train.device in ("auto", "cuda") or cell.config.train.device.startswith("cuda:")


def gpus_per_cell(settings: LauncherSettings, cells: list[Cell]) -> int:
    """GPUs each task asks for: the setting, else 1 where the cells train on CUDA."""
    if settings.gpus_per_cell is not None:
        return settings.gpus_per_cell
    return 1 if any(trains_on_cuda(cell) for cell in cells) else 0


def cpus_per_cell(settings: LauncherSettings, cells: list[Cell]) -> int:
    """CPU cores each task asks for: the setting, else the loader workers + 1, at least 2."""
    if settings.cpus_per_cell is not None:
        return settings.cpus_per_cell
    return max(2, max(cell.config.data.num_workers for cell in cells) + 1)


# -- the task on the node --------------------------------------------------------------------------
def state_path(cell: Cell) -> Path:
    return cell.root / SLURM_DIR / "cells" / f"{cell.id}.json"


def read_state(cell: Cell) -> dict[str, Any]:
    """What the cell's last job wrote (empty: nothing yet, or an unreadable file)."""
    return slurm_job.read_json(str(state_path(cell)))


def cell_job(cell: Cell, gpus: int, signal_delay_s: int) -> slurm_job.CellJob:
    """The submitit task of ``cell``: its two ``gnbench train`` commands (under torchrun for several GPUs)."""
    def python_command(command: list[str]) -> list[str]:
        if gpus > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                    "-m", "gn_plugin.cli", *command[1:]]
        return [sys.executable, "-m", "gn_plugin.cli", *command[1:]]

    files = cell.files
    return slurm_job.CellJob(
        cell=cell.id, new=python_command(cell.new_command()), resume=python_command(cell.resume_command()),
        checkpoint_path=str(files.latest_checkpoint), summary_path=str(files.summary), log=str(cell.log_path),
        state=str(state_path(cell)), signal_delay_s=signal_delay_s,
    )


# -- what each cell is doing -----------------------------------------------------------------------
def submissions_path(root: Path) -> Path:
    return root / SLURM_DIR / "submissions.jsonl"


def submitted_jobs(root: Path) -> dict[str, str]:
    """Cell id -> the Slurm job id of its latest submission."""
    jobs: dict[str, str] = {}
    for record in read_jsonl(submissions_path(root))[0]:
        jobs.update(zip(record.get("cells", []), record.get("jobs", [])))
    return jobs


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Job id -> Slurm's state (first word: ``CANCELLED by 0`` -> CANCELLED), from sacct; missing: unknown."""
    arrays = sorted({job.split("_")[0] for job in job_ids})
    if not arrays or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "-o", "JobID,State", "--parsable2", *[f"--jobs={array}" for array in arrays]]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    info = SlurmInfoWatcher().read_info(output)
    return {job: info[job]["State"].split()[0] for job in job_ids if job in info and info[job].get("State")}


@dataclass
class CellStatus:
    """One cell's state: not submitted, pending, running, requeued, done, failed or cancelled, and why."""

    cell: Cell
    state: str
    job_id: str | None = None
    detail: str = ""

    def line(self) -> str:
        job = f" (job {self.job_id})" if self.job_id else ""
        return f"{self.cell.id}: {self.state}{job}" + (f": {self.detail}" if self.detail else "")


def cell_states(cells: list[Cell]) -> list[CellStatus]:
    """Each cell's state, from its run directory, what its job wrote and Slurm's accounting."""
    root = cells[0].root
    jobs = submitted_jobs(root)
    live = slurm_states([jobs[cell.id] for cell in cells if cell.id in jobs])
    return [status_of(cell, jobs.get(cell.id), live.get(jobs.get(cell.id, ""), "UNKNOWN")) for cell in cells]


def status_of(cell: Cell, job: str | None, slurm_state: str) -> CellStatus:
    """One cell's state: its summary says done; a queued or running job wins over what the job last wrote."""
    if cell.finished:
        return CellStatus(cell, "done", job)
    if job is None:
        return CellStatus(cell, "not submitted")
    written = read_state(cell)
    own = written if written.get("job_id") == job else {}  # what an earlier submission's job wrote does not count
    where = f"on {own['host']}" + (f", CUDA_VISIBLE_DEVICES={own['gpus']}" if own.get("gpus") else "") if own.get("host") else ""
    if slurm_state in QUEUED:
        if own:  # it ran before: a time limit, a preemption or `scontrol requeue`
            return CellStatus(cell, "requeued", job, own.get("reason", "") if own.get("state") == "requeued" else "")
        return CellStatus(cell, "pending", job)
    if slurm_state in RUNNING:
        if own.get("state") == "requeued":
            return CellStatus(cell, "requeued", job, own.get("reason", ""))
        return CellStatus(cell, "running", job, where)
    if own.get("state") == "cancelled":
        return CellStatus(cell, "cancelled", job, own.get("reason", ""))
    if slurm_state == "CANCELLED" and own.get("state") != "failed":
        stopping = own.get("state") in ("running", "requeued")
        return CellStatus(cell, "cancelled", job, "stopping: writing its checkpoint" if stopping else "cancelled before it started")
    if own.get("state") == "failed":
        return CellStatus(cell, "failed", job, f"{own.get('reason', '')}; log {cell.log_path}")
    if slurm_state == "UNKNOWN" and own.get("state") in ("running", "requeued"):
        return CellStatus(cell, own["state"], job, where)  # accounting has not caught up yet
    ended = f"Slurm says {slurm_state}" if slurm_state != "UNKNOWN" else "Slurm no longer knows the job"
    return CellStatus(cell, "failed", job, f"vanished ({ended}); last log line: {slurm_job.last_line(str(cell.log_path))}; log {cell.log_path}")


# -- the plan --------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """The estimated seconds one cell needs (None: no figure to go on) and where the figure comes from."""

    cell: Cell
    seconds: float | None
    how: str


def measured_seconds_per_step(cell: Cell) -> tuple[float, str] | None:
    """Wall seconds per generator step the cell itself has shown: from its last evaluation (training and
    evaluations so far), else from its logged training speed."""
    results = cell.files.read_results()
    timed = [r for r in results if isinstance(r.get("wall_time_s"), (int, float)) and r.get("step")]
    if timed:
        last = timed[-1]
        return last["wall_time_s"] / last["step"], f"measured: {last['step']} steps of {cell.id} took {last['wall_time_s']:.0f} s with evaluations"
    speeds = [s["speed/steps_per_s"] for s in cell.files.read_scalars() if s.get("speed/steps_per_s")]
    if speeds:
        return 1 / statistics.median(speeds), f"measured: median training speed of {cell.id} over {len(speeds)} log intervals, evaluations not included"
    return None


def perf_seconds_per_step(cell: Cell, perf_file: str | None) -> tuple[float, str] | None:
    """Seconds per iteration of the cell's model and method in a ``gnbench perf --json`` file (fp32 settings)."""
    if not perf_file or not Path(perf_file).is_file():
        return None
    try:
        perf = json.loads(Path(perf_file).read_text())
    except ValueError:
        raise GnPluginError(f"launcher.perf: {perf_file} is not a `gnbench perf --json` file") from None
    for row in perf.get("rows", []):
        if (row.get("model"), row.get("group"), row.get("method")) == (cell.config.model.name, "fp32", cell.method) and row.get("seconds"):
            return row["seconds"], f"`gnbench perf` on {perf.get('device', 'an unnamed device')} ({perf_file}): {row['seconds'] * 1000:.0f} ms per iteration, evaluations not included"
    return None


def estimate(cells: list[Cell], settings: LauncherSettings, steps_done: Callable[[Cell], int]) -> list[Estimate]:
    """Seconds each cell needs: the cell's own measured steps, else another cell of its method's, else
    ``launcher.perf``'s step time, each times the steps left (``steps_done``: the steps a cell has behind it)."""
    measured = {cell.id: measured_seconds_per_step(cell) for cell in cells}
    by_method: dict[str, tuple[float, str]] = {}
    for cell in cells:
        if measured[cell.id] is not None:
            by_method.setdefault(cell.group, measured[cell.id])
    estimates = []
    for cell in cells:
        figure = measured[cell.id] or by_method.get(cell.group) or perf_seconds_per_step(cell, settings.perf)
        if figure is None:
            estimates.append(Estimate(cell, None, "no figure yet"))
            continue
        per_step, how = figure
        left = cell.config.train.steps - steps_done(cell)
        estimates.append(Estimate(cell, per_step * left, how))
    return estimates


def time_slots(seconds: float | None, settings: LauncherSettings) -> int | None:
    """Jobs of ``time_min`` a cell of ``seconds`` needs (each loses ``signal_delay_s`` and a minute of start-up)."""
    if seconds is None:
        return None
    usable = max(60.0, settings.time_min * 60 - settings.signal_delay_s - 60)
    return max(1, math.ceil(seconds / usable))


def max_num_timeout(estimates: list[Estimate], settings: LauncherSettings) -> int:
    """The setting, else the most time slots a cell needs by the estimate, plus 2 (3 without an estimate)."""
    if settings.max_num_timeout is not None:
        return settings.max_num_timeout
    slots = [time_slots(e.seconds, settings) for e in estimates if e.seconds is not None]
    return max(slots) - 1 + 2 if slots else 3


def plan_lines(estimates: list[Estimate], settings: LauncherSettings, gpus: int, cpus: int, timeouts: int) -> list[str]:
    """What will be submitted and what it costs: per method, hours and GPU-hours per cell, and in total."""
    def hours(seconds: float) -> str:
        return f"{seconds / 3600:.2f}" if seconds < 360_000 else f"{seconds / 3600:,.0f}"

    where = ", ".join(f"{key} {value}" for key, value in (
        ("partition", settings.partition), ("account", settings.account), ("qos", settings.qos),
        ("constraint", settings.constraint), ("mem", settings.mem),
    ) if value)
    lines = [
        f"plan: {len(estimates)} cell(s) as one job array; each {gpus} GPU(s), {cpus} CPU(s), jobs of "
        f"{settings.time_min} min{f' ({where})' if where else ''}; SIGUSR2 {settings.signal_delay_s} s before a job's end, "
        f"at most {timeouts} requeue(s) at the time limit per cell",
    ]
    groups: dict[str, list[Estimate]] = {}
    for item in estimates:
        groups.setdefault(item.cell.group, []).append(item)
    known = [e.seconds for e in estimates if e.seconds is not None]
    for group, items in groups.items():
        seconds = [e.seconds for e in items if e.seconds is not None]
        if seconds:
            per_cell = statistics.mean(seconds)
            slots = time_slots(per_cell, settings)
            lines.append(f"  {group}: {len(items)} cell(s), about {hours(per_cell)} h each ({hours(per_cell * max(gpus, 1))} "
                         f"{'GPU' if gpus else 'CPU'}-hours, {slots} job(s) of {settings.time_min} min); {items[0].how}")
        else:
            lines.append(f"  {group}: {len(items)} cell(s), not estimated: no measured steps and no `launcher.perf` figure")
    if known:
        total = sum(known) * max(gpus, 1)
        missing = len(estimates) - len(known)
        lines.append(f"  total: about {hours(total)} {'GPU' if gpus else 'CPU'}-hours"
                     + (f" for the {len(known)} estimated cells ({missing} not estimated)" if missing else ""))
    if len(known) < len(estimates):
        lines.append("  (a cell's own cost is measured on its first steps: the next `gnbench bench` shows it; "
                     "`gnbench perf --device cuda --json FILE` and `launcher.perf: FILE` estimate before any step)")
    return lines


# -- submitting and following ----------------------------------------------------------------------
def make_executor(root: Path, name: str, settings: LauncherSettings, gpus: int, cpus: int, timeouts: int, cluster: str) -> Any:
    """A submitit executor for one array of cells (``cluster``: slurm; local in tests)."""
    submitit = require_submitit()
    folder = root / SLURM_DIR / "jobs" / "%j"
    if cluster == "local":  # the same protocol on this machine: SIGUSR2 at timeout - signal_delay_s, requeue by restart
        executor = submitit.LocalExecutor(folder, max_num_timeout=timeouts)
        executor.update_parameters(timeout_min=settings.time_min, signal_delay_s=settings.signal_delay_s)
        return executor
    if shutil.which("sbatch") is None:
        raise GnPluginError("--launcher slurm: sbatch not found; submit from a Slurm login node (or use --print-commands)")
    executor = submitit.SlurmExecutor(folder, max_num_timeout=timeouts)
    options = {
        "partition": settings.partition, "account": settings.account, "qos": settings.qos,
        "constraint": settings.constraint, "mem": settings.mem, "gres": f"gpu:{gpus}" if gpus else None,
        "setup": settings.setup or None, "additional_parameters": settings.sbatch or None,
    }
    executor.update_parameters(
        job_name=f"gnbench-{name}", time=settings.time_min, nodes=1, ntasks_per_node=1, cpus_per_task=cpus,
        signal_delay_s=settings.signal_delay_s, array_parallelism=settings.array_parallelism or 256,
        **{key: value for key, value in options.items() if value is not None},
    )
    return executor


def submit(
    spec: BenchSpec, cells: list[Cell], settings: LauncherSettings, *, steps_done: Callable[[Cell], int],
    log: Callable[[str], None] = print, cluster: str = "slurm",
) -> list[Any]:
    """Print the plan and submit ``cells`` as one job array; returns submitit's jobs (one per cell)."""
    root = cells[0].root
    gpus, cpus = gpus_per_cell(settings, cells), cpus_per_cell(settings, cells)
    estimates = estimate(cells, settings, steps_done)
    timeouts = max_num_timeout(estimates, settings)
    for line in plan_lines(estimates, settings, gpus, cpus, timeouts):
        log(line)
    executor = make_executor(root, spec.name, settings, gpus, cpus, timeouts, cluster)
    import cloudpickle

    cloudpickle.register_pickle_by_value(slurm_job)  # the job process reads it without importing torch
    try:
        with executor.batch():  # one job array; each task is its CellJob, whose checkpoint() submitit calls
            jobs = [executor.submit(cell_job(cell, gpus, settings.signal_delay_s)) for cell in cells]
    except Exception as exc:  # sbatch refused the job: a bad partition, account or option
        message = " ".join(str(exc).split())
        raise GnPluginError(f"Slurm refused the job array: {message[-400:]}") from None
    append_jsonl(submissions_path(root), {
        "cells": [cell.id for cell in cells], "jobs": [str(job.job_id) for job in jobs], "submitted_at": slurm_job.now(),
        "command": shlex.join(["gnbench", *sys.argv[1:]]),
    })
    return jobs


def follow(cells: list[Cell], steps_done: Callable[[Cell], int], progress: bool | None = None) -> list[CellStatus]:
    """Show a progress bar of every cell's steps until no cell is pending, running or requeued; returns the states.

    Ctrl-C stops following; the jobs go on.
    """
    total = sum(cell.config.train.steps for cell in cells)
    counted = lambda: sum(steps_done(cell) for cell in cells)  # noqa: E731
    bar = tqdm(total=total, initial=counted(), unit="step", desc=f"{len(cells)} runs", disable=None if progress is None else not progress)
    try:
        with bar:
            while True:
                states = cell_states(cells)
                active = [s for s in states if s.state in ("pending", "running", "requeued")]
                bar.update(counted() - bar.n)
                bar.set_postfix_str(", ".join(f"{n} {state}" for state, n in count_states(states).items()))
                if not active:
                    return states
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        raise GnPluginError("stopped following; the jobs go on (run the same command again to see them)") from None


def count_states(states: list[CellStatus]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in states:
        counts[status.state] = counts.get(status.state, 0) + 1
    return counts


def run_on_slurm(
    spec: BenchSpec, cells: list[Cell], *, check_cells: Callable[[list[Cell]], None], steps_done: Callable[[Cell], int],
    spec_command: str = "gnbench bench SPEC --launcher slurm", overrides: list[str] | None = None,
    wait: bool = False, status_only: bool = False, log: Callable[[str], None] = print, cluster: str = "slurm",
) -> bool:
    """Show every cell's state, submit the cells to (re)run, optionally follow them; returns whether every
    cell has its summary (the bench then writes the report).

    ``check_cells`` builds the cells' components before anything is submitted; ``steps_done`` counts a
    cell's steps (both from :mod:`gn_plugin.experiments.bench`, which calls this).
    """
    settings = launcher_settings(spec, overrides)
    require_submitit()
    root = cells[0].root
    lock = RunLock(root / LOCK_FILE)  # one submitting bench per output folder
    lock.acquire()
    try:
        states = cell_states(cells)
        for status in states:
            if status.state != "done" or len(cells) <= 20:
                log(status.line())
        log(f"{len(cells)} runs in {root}: " + ", ".join(f"{n} {state}" for state, n in count_states(states).items()))
        if all(s.state == "done" for s in states):
            return True
        again = [s.cell for s in states if s.state in RESUBMITTED]
        if not again:
            log(f"nothing to submit; follow with: {spec_command} --status (or squeue --me)")
            return False
        if status_only:
            log(f"{len(again)} cell(s) to submit: run `{spec_command}`")
            return False
        check_cells(again)
        jobs = submit(spec, again, settings, steps_done=steps_done, log=log, cluster=cluster)
    finally:
        lock.release()
    array = str(jobs[0].job_id).split("_")[0]
    log(f"submitted job {array}: {len(jobs)} cell(s)" + (f" as the job array {array}_[0-{len(jobs) - 1}]" if len(jobs) > 1 else ""))
    log(f"follow with: squeue -j {array}   or   {spec_command} --status   (logs: {root / 'logs'})")
    if not wait:
        log(f"once every cell is done, `{spec_command}` writes the report")
        return False
    states = follow(cells, steps_done)
    for status in states:
        if status.state != "done":
            log(status.line())
    return all(s.state == "done" for s in states)
