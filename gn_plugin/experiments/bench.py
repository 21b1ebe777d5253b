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
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gn_plugin.atomic import write_atomically
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError, Interrupted
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.experiments.invocations import Invocation, record_invocation
from gn_plugin.experiments.machine import (
    cpu_cores,
    load_average,
    machine_info,
    visible_gpus,
)
from gn_plugin.experiments.pages import write_docs_page, write_report
from gn_plugin.experiments.report import build_report
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
FLOOR_FORMAT = 2  # floor.json entries of another format are recomputed


def compute_floors(cells: list[Cell], root: Path) -> dict[str, dict[str, Any]]:
    """Real-vs-real metrics per distinct data/model/eval setting, computed once and kept in ``floor.json``.

    The floor proper is :meth:`Evaluator.resampled_floor` at the generated sample count (``FLOOR_DRAWS``
    draws, for a CI); beside it, for context, the held-out split (or one half of the data against the
    other) at the size it has.
    """
    path = root / "floor.json"
    floors = read_floors(path)
    for cell in cells:
        key = floor_key(cell.config)
        if floors.get(key, {}).get("format") == FLOOR_FORMAT:
            continue
        dataset, _ = build_dataset_and_models(cell.config)
        reference = build_reference_dataset(cell.config, dataset)  # a held-out split is the reference itself
        held_out = held_out_split(cell.config, dataset) if reference is None else None
        evaluator = Evaluator(
            dataset, cell.config.eval, evaluation_device(cell.config), held_out=held_out, reference_data=reference
        )
        count, size = cell.config.eval.num_samples, len(dataset)
        pool = len(held_out) if held_out is not None else size if reference is not None else size - size // 2
        context = min(count, pool)
        own = "" if reference is not None else " (the reference's own images)"
        floors[key] = {
            "format": FLOOR_FORMAT,
            "space": dataset.metric_space,
            "images": count,
            "label": f"{count} training images",
            "draws": evaluator.resampled_floor(FLOOR_DRAWS),
            "how": (
                f"{FLOOR_DRAWS} draws of {count} images, with replacement, from the {size} {dataset.name} training "
                f"images{own}, each scored against the reference exactly like a generator's "
                f"samples. A draw with replacement is an i.i.d. sample of the training distribution, so this is what a "
                f"generator that reproduces the training set exactly scores with {count} samples, the count the "
                "generators are scored with (FID and KID are biased by the sample count, so a floor at another count "
                "is no floor). Mean and 95 % bootstrap CI of the mean over the draws"
                + (
                    f"; {count} distinct real images do not exist here ({size} training, {pool} held out)."
                    if count > size
                    else "."
                )
                + (
                    f" Beside it, for context: the {context} held-out images against the same reference, fresh "
                    "images but fewer, so with a larger small-sample bias."
                    if held_out is not None
                    else f" Beside it, for context: {context} distinct training images against the same reference."
                    if reference is not None
                    else f" Beside it, for context: {context} images of one random half against the other half."
                )
                + (
                    f" The reference is the data set's {len(reference)} held-out '{dataset.reference_split}' images, "
                    "which training never sees."
                    if reference is not None
                    else ""
                )
            ),
            "held_out": {
                "label": (
                    f"{context} held-out images" if held_out is not None
                    else f"{context} training images" if reference is not None
                    else f"{context} images, half against half"
                ),
                "images": context,
                "metrics": evaluator.floor(),
            },
        }
        text = json.dumps(floors, indent=2).encode()
        write_atomically(path, lambda file: file.write(text))
    return floors


def read_floors(path: Path) -> dict[str, dict[str, Any]]:
    """The floors kept in ``floor.json``; an unreadable file or entry is recomputed (it is only a cache)."""
    if not path.is_file():
        return {}
    try:
        kept = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        kept = None
    if not isinstance(kept, dict):
        print(f"{path} is unreadable; computing the floors again", file=sys.stderr)
        return {}
    return {key: floor for key, floor in kept.items() if isinstance(floor, dict) and isinstance(floor.get("metrics"), dict)}




# -- the command -----------------------------------------------------------------------------------
def check_cells(cells: list[Cell]) -> None:
    """Build every cell's components once (models on the meta device): a bad option fails before any cell runs."""
    datasets: dict[str, ImageDataset] = {}
    for cell in cells:
        data = json.dumps(cell.config.data.model_dump(mode="json"), sort_keys=True)
        try:
            if data not in datasets:
                datasets[data] = build_dataset(cell.config)
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
        failed = run_cells(pending, jobs, log) if pending else []
    finally:
        lock.release()
    after = load_average()
    invocation = Invocation(
        started_at=started.isoformat(timespec="seconds"), elapsed_s=time.perf_counter() - clock, jobs=jobs,
        executed=len(pending), skipped=len(cells) - len(pending), failed=[c.id for c in failed],
        command=shlex.join(["gnbench", *sys.argv[1:]]), machine=machine_info(),
        load={"before_1min": before[0], "after_15min": after[2]} if before and after else None,
    )
    if pending:
        record_invocation(root, invocation)
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
        clock = time.perf_counter()
        report = build_report(spec, cells, compute_floors(finished, root))
        written = write_report(report, root)
        if spec.docs and write_docs and not overrides:
            seconds = time.perf_counter() - clock
            written += write_docs_page(report, spec_path, root, Path(spec.docs), seconds)
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
