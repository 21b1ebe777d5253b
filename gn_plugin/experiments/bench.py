"""``gnbench bench SPEC``: run methods head to head under identical conditions, then report.

A benchmark spec (YAML) names a base config and what varies::

    name: digits
    base: ../digits/_recipe.yaml          # relative to the spec file
    set: {train.steps: 6000}              # shared overrides of base
    methods:                              # name -> config fragment or recipe file
      gn: ../digits/gn.yaml
      wgan-gp: {norm: none, loss: wasserstein, regularizers: [{name: gp, weight: 10}]}
    grid: {model.options.depth: [2, 4]}   # optional: every combination, for every method
    seeds: [0, 1, 2]

Cells are methods × grid × seeds (:mod:`gn_plugin.experiments.spec`). A cell's config is built in layers: ``base``, ``set``, its method
(a recipe file counts with what it changes relative to ``base``), its grid values, ``--set``
overrides, its seed; nothing else differs between cells. ``norm``, ``loss`` and ``regularizers``
replace the layer below wholesale (so ``sn`` never inherits ``gn-cr``'s options). Each cell is
one ``gnbench train`` process (``--jobs N`` in parallel: one GPU each where there are GPUs, an equal
share of the CPU threads otherwise). A cell whose run directory holds ``summary.json`` is finished
and skipped; one with a checkpoint but no summary is resumed. Output paths (``out``, ``docs``) are
relative to the working directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gn_plugin.config import Config
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.experiments.invocations import Invocation, record_invocation
from gn_plugin.experiments.machine import (
    cpu_cores,
    load_average,
    machine_info,
    visible_gpus,
)
from gn_plugin.experiments.pages import write_docs_page, write_report
from gn_plugin.experiments.spec import Cell, find_spec, floor_key, prepare
from gn_plugin.training.build import build_dataset, build_dataset_and_models


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
    threads = base.get("OMP_NUM_THREADS", str(max(1, cpu_cores() // jobs)))
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

    Each process writes its output to the cell's log file. One progress bar counts the generator
    steps of all cells (read from their ``scalars.jsonl``) with an ETA; a line is logged per finished
    cell. ``progress``: show the bar (None: when stderr is a terminal).
    """
    environments = job_environments(jobs)
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(jobs):
        slots.put(slot)

    def run(cell: Cell) -> tuple[int, float]:
        slot = slots.get()
        started = time.perf_counter()
        try:
            cell.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(cell.log_path, "a") as output:
                command = [sys.executable, "-m", "gn_plugin.cli", *cell.command()[1:]]
                process = subprocess.run(command, check=False, stdout=output, stderr=subprocess.STDOUT, env=environments[slot])
        finally:
            slots.put(slot)
        return process.returncode, time.perf_counter() - started

    def report(line: str) -> None:
        with tqdm.external_write_mode():  # the line above the bar, not through it
            log(line)

    failed, done = [], 0
    total = sum(cell.config.train.steps for cell in cells)
    counted = lambda: sum(steps_done(cell) for cell in cells)  # noqa: E731
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(
        total=total, initial=counted(), unit="step", desc=f"{len(cells)} runs", disable=None if progress is None else not progress,
    ) as bar:
        futures = {pool.submit(run, cell): cell for cell in cells}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=PROGRESS_INTERVAL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                cell, done = futures[future], done + 1
                code, seconds = future.result()
                if code == 0:
                    report(f"[{done}/{len(cells)}] {cell.id}: finished in {seconds:.0f} s")
                else:
                    failed.append(cell)
                    lines = cell.log_path.read_text().strip().splitlines() or ["(no output)"]
                    report(f"[{done}/{len(cells)}] {cell.id}: FAILED (exit {code}): {lines[-1]}")
            bar.update(counted() - bar.n)
            bar.set_postfix_str(f"{done}/{len(cells)} runs done")
    return failed


# -- the real-vs-real floor ------------------------------------------------------------------------
def compute_floors(cells: list[Cell], root: Path) -> dict[str, dict[str, Any]]:
    """Real-vs-real metrics per distinct data/model/eval setting, computed once and kept in ``floor.json``."""
    path = root / "floor.json"
    floors = json.loads(path.read_text()) if path.is_file() else {}
    for cell in cells:
        key = floor_key(cell.config)
        if key in floors:
            continue
        dataset, _ = build_dataset_and_models(cell.config)
        held_out = held_out_split(cell.config, dataset)
        evaluator = Evaluator(dataset, cell.config.eval, floor_device(cell.config), held_out=held_out)
        pool = len(held_out) if held_out is not None else len(dataset) - len(dataset) // 2
        floors[key] = {
            "metrics": evaluator.floor(),
            "images": min(cell.config.eval.num_samples, pool),
            "space": dataset.metric_space,
            "how": (
                f"{dataset.name} held-out split against the train-split reference"
                if held_out is not None
                else f"one random half of {dataset.name} against the other half"
            ),
        }
        path.write_text(json.dumps(floors, indent=2))
    return floors


def held_out_split(config: Config, dataset: ImageDataset) -> ImageDataset | None:
    """The data set's ``test`` split at the training resolution, or None where it has none."""
    try:
        return build_dataset(config, split="test", resolution=dataset.resolution)
    except GnPluginError:
        return None


def floor_device(config: Config) -> str:
    if config.train.device != "auto":
        return config.train.device
    return "cuda" if torch.cuda.is_available() else "cpu"



# -- the command -----------------------------------------------------------------------------------
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
    log(f"{len(cells)} runs in {root}: {len(cells) - len(pending)} finished, {len(pending)} to run, {jobs} at a time")
    started, clock, before = datetime.datetime.now().astimezone(), time.perf_counter(), load_average()
    failed = run_cells(pending, jobs, log) if pending else []
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
) -> list[Path]:
    """Run a benchmark spec end to end; returns the report files written (none with ``print_commands``).

    The docs page named by the spec is written with ``write_docs`` and only when no ``overrides`` are
    given: a modified benchmark is not the published one.
    """
    spec, cells = prepare(spec_path, out, overrides)
    invocation = execute(cells, jobs or resolve_jobs(spec.jobs), print_commands=print_commands, log=log)
    if invocation is None:
        print(f"# then run `gnbench bench {spec_path}` again to build the report", file=sys.stderr)
        return []
    root = cells[0].root
    finished = [cell for cell in cells if cell.finished]
    written = []
    if finished:
        clock = time.perf_counter()
        floors = compute_floors(finished, root)
        written = write_report(spec, cells, floors, root)
        if spec.docs and write_docs and not overrides:
            seconds = time.perf_counter() - clock
            written += write_docs_page(spec, spec_path, cells, floors, root, Path(spec.docs), seconds)
        for path in written:
            log(f"wrote {path}")
    if invocation.failed:
        raise GnPluginError(
            f"{len(invocation.failed)} of {len(cells)} runs failed ({', '.join(invocation.failed)}); "
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
    run_benchmark(
        find_spec(args.spec), jobs=args.jobs, out=args.out, overrides=args.set, print_commands=args.print_commands,
        write_docs=Path(args.spec).suffix == ".yaml",
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
    bench.set_defaults(handler=command_bench)
