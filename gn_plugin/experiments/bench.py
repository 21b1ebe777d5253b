"""``gnbench bench SPEC``: run a benchmark's cells head to head under identical conditions, then report.

The spec and its cells are :mod:`gn_plugin.experiments.spec`. Each cell is one ``gnbench train``
process (``--jobs N`` in parallel: one GPU each where there are GPUs, an equal share of the CPU
threads otherwise). A cell whose run directory holds ``summary.json`` is finished and skipped; one
with a checkpoint but no summary is resumed. When the cells are done, the real-vs-real floor is
computed and the report written (:mod:`gn_plugin.experiments.pages`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gn_plugin.atomic import write_atomically
from gn_plugin.config import Config
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError, Interrupted
from gn_plugin.evaluation.assets import cache_dir
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.evaluation.reference import dataset_fingerprint
from gn_plugin.experiments.invocations import Invocation, record_invocation
from gn_plugin.experiments.machine import (
    cpu_cores,
    load_average,
    machine_info,
    visible_gpus,
)
from gn_plugin.experiments.pages import write_docs_page, write_report
from gn_plugin.experiments import metric_validation
from gn_plugin.experiments.report import analyse, collect, primary_comparison, read_data, write_data
from gn_plugin.experiments.spec import Cell, find_spec, floor_key, prepare
from gn_plugin.training.build import (
    build_dataset,
    build_dataset_and_models,
    build_reference_dataset,
    check_components,
    evaluation_device,
    held_out_split,
)
from gn_plugin.training.run_dir import LOCK_FILE, RunLock
from gn_plugin.training.stopping import stop_signals
from gn_plugin.training.threads import thread_share


PROGRESS_INTERVAL_S = 2.0  # how often the progress bar reads the runs' scalars.jsonl


# -- running ---------------------------------------------------------------------------------------
def resolve_jobs(jobs: int | str) -> int:
    """``auto``: one job per GPU when there are GPUs, else one per CPU core."""
    if jobs != "auto":
        return int(jobs)
    return len(visible_gpus()) or cpu_cores()


def job_environments(jobs: int) -> list[dict[str, str]]:
    """One environment per parallel slot: its own GPU where there are GPUs, else 1/jobs of the CPU threads.

    Oversubscribed CPU threads slow small models by orders of magnitude, so each job gets its share.
    A user's own ``OMP_NUM_THREADS`` is kept.
    """
    base = dict(os.environ)
    gpus = visible_gpus()
    if gpus:
        return [{**base, "CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} for slot in range(jobs)]
    threads = base.get("OMP_NUM_THREADS", str(thread_share(cpu_cores(), jobs)))
    return [{**base, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(jobs)]


def steps_done(cell: Cell) -> int:
    """Generator steps a cell has behind it: all of them once finished, else its last logged step."""
    if cell.finished:
        return cell.config.train.steps
    try:
        with open(cell.files.scalars, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - (1 << 14)))  # a line holds a few dozen scalars
            lines = file.read().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):  # the line being written, or the cut-off first one
            continue
    return 0


def run_cells(
    cells: list[Cell], jobs: int, log: Callable[[str], None] = print, progress: bool | None = None
) -> list[Cell]:
    """Run ``cells`` as ``gnbench train`` processes, ``jobs`` at a time; returns the cells that failed.

    Each process writes its output to the cell's log file and runs in its own session, so a signal
    reaches it only through the bench: one SIGINT (Ctrl-C) or SIGTERM stops launching queued cells
    at once and is forwarded to the running ones, which checkpoint and exit; the bench waits for
    them and raises :class:`~gn_plugin.errors.Interrupted`. A further signal is forwarded again
    (a second Ctrl-C then stops a cell at once). One progress bar counts the generator steps of all cells (read
    from their ``scalars.jsonl``) with an ETA; a line is logged per finished cell. ``progress``:
    show the bar (None: when stderr is a terminal).
    """
    environments = job_environments(jobs)
    queued, running, failed = list(cells), {}, []
    forwarded, done, stopped = 0, 0, 0
    total = sum(cell.config.train.steps for cell in cells)
    counted = lambda: sum(steps_done(cell) for cell in cells)  # noqa: E731
    bar = tqdm(total=total, initial=counted(), unit="step", desc=f"{len(cells)} runs",
               disable=None if progress is None else not progress)

    def report(line: str) -> None:
        with tqdm.external_write_mode():  # the line above the bar, not through it
            log(line)

    last_read = time.perf_counter()
    with bar, stop_signals(second_stops_at_once=False) as stop:
        while running or (queued and stop.signum is None):
            free = [slot for slot in range(jobs) if slot not in running]
            while stop.signum is None and queued and free:
                slot = free.pop(0)
                running[slot] = launch(queued.pop(0), environments[slot])
            for slot, (process, cell, started) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[slot]
                done += 1
                progress_text = f"[{done}/{len(cells)}] {cell.id}"
                if code == 0:
                    report(f"{progress_text}: finished in {time.perf_counter() - started:.0f} s")
                elif stop.signum is not None:
                    stopped += 1
                    report(f"{progress_text}: stopped (exit {code})")
                else:
                    failed.append(cell)
                    lines = cell.log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                    report(f"{progress_text}: FAILED (exit {code}): {lines[-1]}")
            while forwarded < stop.count:
                for process, _, _ in running.values():
                    process.send_signal(stop.signum)
                forwarded += 1
            if time.perf_counter() - last_read >= PROGRESS_INTERVAL_S or not (running or queued):
                bar.update(counted() - bar.n)
                bar.set_postfix_str(f"{done}/{len(cells)} runs done")
                last_read = time.perf_counter()
            time.sleep(0.05)
    if stop.signum is not None:
        raise Interrupted(
            f"stopped by {stop.name}: {stopped} running cell(s) stopped with a checkpoint, {len(queued)} not started; "
            "run the same command again to continue", stop.signum,
        )
    return failed


def launch(cell: Cell, environment: dict[str, str]) -> tuple[subprocess.Popen, Cell, float]:
    """Start ``cell``'s ``gnbench train`` process in its own session, its output appended to its log."""
    cell.log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "gn_plugin.cli", *cell.command()[1:]]
    with open(cell.log_path, "a") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
    return process, cell, time.perf_counter()


# -- the real-vs-real floor ------------------------------------------------------------------------
FLOOR_DRAWS = 20
FLOOR_FORMAT = 4  # cached floors of another format are computed again


def floor_cache_path(config: Config, dataset: ImageDataset) -> Path:
    """Where the floor of ``config``'s data, evaluation and image size is cached: the cache the reference
    statistics use (``eval.cache_dir``, ``$GN_PLUGIN_CACHE`` or ``~/.cache/gn_plugin``), keyed by
    :func:`~gn_plugin.experiments.spec.floor_key` and a fingerprint of every image."""
    name = f"{dataset.name}-{dataset.resolution}px-{floor_key(config)}-{dataset_fingerprint(dataset)}"
    return cache_dir(config.eval.cache_dir) / "floors" / f"{name}.json"


def read_floor(path: Path) -> dict[str, Any] | None:
    """A cached floor, or None when it is missing, unreadable (it is then computed again) or of another format."""
    if not path.is_file():
        return None
    try:
        floor = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        floor = None
    if not isinstance(floor, dict) or floor.get("format") != FLOOR_FORMAT or not isinstance(floor.get("draws"), list):
        print(f"{path} is unreadable; computing the floor again", file=sys.stderr)
        return None
    return floor


def compute_floors(cells: list[Cell], log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Real-vs-real metrics per distinct data/evaluation/image-size setting (:func:`floor_key`), from the
    cache (:func:`floor_cache_path`) or computed once, with a progress bar, and cached.

    The floor proper is :meth:`Evaluator.resampled_floor` at the generated sample count (``FLOOR_DRAWS``
    draws, for an interval); beside it, for context, the held-out split (or one half of the data against
    the other) at the size it has.
    """
    floors: dict[str, dict[str, Any]] = {}
    for cell in cells:
        key = floor_key(cell.config)
        if key in floors:
            continue
        dataset, _ = build_dataset_and_models(cell.config)
        path = floor_cache_path(cell.config, dataset)
        floors[key] = read_floor(path) or compute_floor(cell.config, dataset, path, log)
    return floors


def compute_floor(config: Config, dataset: ImageDataset, path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Compute one floor (see :func:`compute_floors`) and cache it at ``path``."""
    count, size = config.eval.num_samples, len(dataset)
    log(f"real-vs-real floor of {dataset.name}: {FLOOR_DRAWS} draws of {count} images (cached in {path})")
    reference = build_reference_dataset(config, dataset)  # a held-out split is the reference itself
    held_out = held_out_split(config, dataset) if reference is None else None
    evaluator = Evaluator(
        dataset, config.eval, evaluation_device(config), held_out=held_out, reference_data=reference,
        progress=sys.stderr.isatty(),
    )
    pool = len(held_out) if held_out is not None else size if reference is not None else size - size // 2
    floor = {
        "format": FLOOR_FORMAT,
        "data": dataset.name,
        "space": dataset.metric_space,
        "images": count,
        "training_images": size,
        "reference_images": len(reference) if reference is not None else None,
        "draws": evaluator.resampled_floor(FLOOR_DRAWS),
        "context": {
            "kind": "held_out" if held_out is not None else "training" if reference is not None else "halves",
            "images": min(count, pool),
            "metrics": evaluator.floor(),
        },
    }
    text = json.dumps(floor, indent=2).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(text))
    return floor


# -- the command -----------------------------------------------------------------------------------
def check_cells(cells: list[Cell], *, held_out: bool = False) -> None:
    """Build every cell's components once (models on the meta device): a bad option fails before any cell runs.

    ``held_out``: every data set must also have a held-out split (a spec's ``validate_metrics`` needs one).
    """
    datasets: dict[str, ImageDataset] = {}
    for cell in cells:
        data = json.dumps(cell.config.data.model_dump(mode="json"), sort_keys=True)
        try:
            if data not in datasets:
                datasets[data] = build_dataset(cell.config)
                if held_out and held_out_split(cell.config, datasets[data]) is None:
                    raise GnPluginError(
                        f"validate_metrics: data set '{datasets[data].name}' has no held-out split ('test') to "
                        "check the runs for memorisation against"
                    )
            check_components(cell.config, datasets[data])
        except GnPluginError as exc:
            raise GnPluginError(f"cell {cell.id}: {exc}") from None


def execute(
    cells: list[Cell], jobs: int, *, print_commands: bool = False, log: Callable[[str], None] = print
) -> Invocation | None:
    """Run the unfinished cells (or only print their commands); records the invocation in the output folder."""
    pending = [cell for cell in cells if not cell.finished]
    if print_commands:
        for cell in pending:
            print(shlex.join(cell.command()))
        return None
    root = cells[0].root
    lock = RunLock(root / LOCK_FILE)  # one bench per output folder
    lock.acquire()
    try:
        check_cells(pending)
        log(f"{len(cells)} runs in {root}: {len(cells) - len(pending)} finished, {len(pending)} to run, {jobs} at a time")
        started, clock, before = datetime.datetime.now().astimezone(), time.perf_counter(), load_average()
        stopped: Interrupted | None = None
        try:
            failed = run_cells(pending, jobs, log) if pending else []
        except Interrupted as exc:  # recorded below, then raised: the Cost section shows the stopped invocation
            failed, stopped = [], exc
    finally:
        lock.release()
    after = load_average()
    invocation = Invocation(
        started_at=started.isoformat(timespec="seconds"), elapsed_s=time.perf_counter() - clock, jobs=jobs,
        executed=sum(c.finished for c in pending) if stopped else len(pending), skipped=len(cells) - len(pending),
        failed=[c.id for c in failed], command=shlex.join(["gnbench", *sys.argv[1:]]), machine=machine_info(),
        load={"before_1min": before[0], "after_15min": after[2]} if before and after else None,
        stopped=signal.Signals(stopped.exit_code - 128).name if stopped else None,
    )
    if pending:
        record_invocation(root, invocation)
    if stopped:
        raise stopped
    return invocation


def run_benchmark(
    spec_path: str | Path,
    *,
    jobs: int | None = None,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    print_commands: bool = False,
    write_docs: bool = True,
    log: Callable[[str], None] = print,
    launcher: str = "local",
    slurm_options: dict[str, Any] | None = None,
) -> list[Path]:
    """Run a benchmark spec end to end; returns the report files written (none with ``print_commands``).

    The docs page named by the spec is written with ``write_docs`` and only when no ``overrides`` are
    given: a modified benchmark is not the published one. ``launcher="slurm"`` submits the cells
    instead (:func:`gn_plugin.experiments.slurm.run_on_slurm`, given ``slurm_options``); the report
    is written once every cell has its summary.
    """
    spec, cells = prepare(spec_path, out, overrides)
    if spec.validate_metrics and not print_commands:
        check_cells(cells[:1], held_out=True)  # before any cell runs, not after all of them
    if launcher == "slurm" and not print_commands:
        from gn_plugin.experiments.slurm import run_on_slurm

        if not run_on_slurm(spec, cells, check_cells=check_cells, steps_done=steps_done, log=log, **(slurm_options or {})):
            return []
        failed: list[str] = []  # every cell has its summary
    else:
        invocation = execute(cells, jobs or resolve_jobs(spec.jobs), print_commands=print_commands, log=log)
        if invocation is None:
            print(f"# then run `gnbench bench {spec_path}` again to build the report", file=sys.stderr)
            return []
        failed = invocation.failed
    root = cells[0].root
    finished = [cell for cell in cells if cell.finished]
    written = []
    if finished:
        written = write_data(collect(spec, cells, compute_floors(finished, log), root), root)
        if spec.validate_metrics:
            generator = primary_comparison(spec, cells).generator
            written += metric_validation.check_benchmark(finished, spec.metrics, generator, root, log)
        report = analyse(spec, cells, read_data(root))  # the page shows what the published files hold
        written += write_report(report, root)
        if spec.docs and write_docs and not overrides:
            written += write_docs_page(report, spec_path, root, Path(spec.docs))
        for path in written:
            log(f"wrote {path}")
    if failed:
        raise GnPluginError(
            f"{len(failed)} of {len(cells)} runs failed ({', '.join(failed)}); "
            f"their output is in {root / 'logs'}"
        )
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``bench`` and ``lipschitz`` share."""
    parser.add_argument("--jobs", type=int, help="parallel runs (default: the spec's jobs; auto = one per GPU, else per core)")
    parser.add_argument("--out", help="output folder (default: the spec's out, else runs/bench/<name>)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override every cell's config (no docs page then)")
    parser.add_argument(
        "--print-commands", action="store_true",
        help="print one `gnbench train` command per unfinished run (for a cluster scheduler) and run nothing",
    )


def command_bench(args: argparse.Namespace) -> None:
    # A shipped spec chosen by name runs anywhere; only a spec file given by path writes its docs page.
    if args.launcher == "local" and (args.wait or args.status or args.launcher_set):
        raise GnPluginError("--wait, --status and --launcher-set go with --launcher slurm")
    slurm_options = {
        "overrides": args.launcher_set, "wait": args.wait, "status_only": args.status,
        "spec_command": shlex.join(["gnbench", "bench", args.spec, *(["--out", args.out] if args.out else []),
                                    *(["--set", *args.set] if args.set else []), "--launcher", "slurm"]),
    }
    run_benchmark(
        find_spec(args.spec), jobs=args.jobs, out=args.out, overrides=args.set, print_commands=args.print_commands,
        write_docs=Path(args.spec).suffix == ".yaml", launcher=args.launcher, slurm_options=slurm_options,
    )


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gnbench bench``."""
    bench = subparsers.add_parser(
        "bench", help="run methods head to head from a benchmark spec; write results.csv, results.md, plots"
    )
    bench.add_argument(
        "spec", help="benchmark spec YAML (e.g. yaml_configs/bench/digits.yaml), or the name of a shipped one (digits)"
    )
    add_arguments(bench)
    bench.add_argument(
        "--launcher", choices=["local", "slurm"], default="local",
        help="local: run the cells here (--jobs at a time); slurm: submit them as one Slurm job array through "
        "submitit and return (run the command again to see their state, resubmit failed ones and, once all are "
        "done, write the report)",
    )
    bench.add_argument(
        "--launcher-set", nargs="+", default=[], metavar="KEY=VALUE",
        help="override the spec's launcher: settings (partition=gpu time_min=240 gpus_per_cell=1 ...)",
    )
    bench.add_argument("--wait", action="store_true", help="with --launcher slurm: follow the job array until it is done")
    bench.add_argument(
        "--status", action="store_true", help="with --launcher slurm: show each cell's state and submit nothing"
    )
    bench.set_defaults(handler=command_bench)
