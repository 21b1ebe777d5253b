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

Cells are methods × grid × seeds. A cell's config is built in layers: ``base``, ``set``, its method
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
import hashlib
import itertools
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from gn_plugin.errors import GnPluginError
from gn_plugin.runner.config import (
    Config,
    Strict,
    format_validation_error,
    read_yaml,
    resolve_bases,
    config_from_dict,
    deep_merge,
    load_config,
    parse_overrides,
    save_config,
)
from gn_plugin.runner.run_files import RunFiles

#: Config keys a method fragment replaces wholesale instead of merging key by key.
COMPONENT_KEYS = ("norm", "loss", "regularizers")
NAME_PATTERN = r"^[\w.+-]+$"


class BenchSpec(Strict):
    """A benchmark: cells = methods × grid × seeds, all sharing ``base`` and ``set``."""

    name: str = Field(pattern=NAME_PATTERN, description="short name; the default output folder is runs/bench/<name>")
    title: str = Field("", description="heading of the results page")
    description: str = Field("", description="Markdown shown at the top of the results page")
    base: str = Field(description="the config every cell starts from, relative to the spec file")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of base shared by every cell (methods and grid come on top); dotted keys as with --set",
    )
    methods: dict[str, dict[str, Any] | str] = Field(
        default_factory=dict,
        description="method name -> config fragment ({norm: sn}) or a recipe file relative to the spec; "
        "empty: one unnamed method (use grid)",
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="dotted key -> values; every combination runs for every method (norm: [gn, sn], model.name: [cnn32, resnet32])",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="train.seed of each repetition")
    jobs: int | Literal["auto"] = Field(
        "auto", description="parallel runs; auto = one per GPU, else one per CPU core (--jobs overrides)"
    )
    out: str | None = Field(None, description="output folder (default runs/bench/<name>)")
    docs: str | None = Field(None, description="Markdown results page to (re)write, e.g. docs/results/digits.md")
    metrics: list[str] = Field(
        default_factory=lambda: ["fid", "kid", "is"], description="metrics shown in the table (best and final)"
    )

    @field_validator("methods")
    @classmethod
    def _method_names(cls, methods: dict[str, dict[str, Any] | str]) -> dict[str, dict[str, Any] | str]:
        for name in methods:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"method name {name!r} may only hold letters, digits and . + - _")
        return methods

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key '{key}' has no values")
        return grid

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        from gn_plugin.runner.metrics import get_metric

        for name in metrics:
            try:
                get_metric(name)
            except GnPluginError as exc:
                raise ValueError(str(exc)) from None
        return metrics

    @field_validator("jobs")
    @classmethod
    def _positive_jobs(cls, jobs: int | str) -> int | str:
        if isinstance(jobs, int) and jobs < 1:
            raise ValueError("jobs must be >= 1 or auto")
        return jobs


def load_spec(path: str | Path) -> BenchSpec:
    """Read and validate a benchmark spec; problems are one line naming the file and key."""
    path = Path(path)
    try:
        return BenchSpec.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise GnPluginError(format_validation_error(exc, str(path))) from None


# -- cells -----------------------------------------------------------------------------------------
def value_label(value: Any) -> str:
    """Short text for a grid value: a component's name, names joined by +, or the value itself."""
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    if isinstance(value, list):
        return "+".join(value_label(v) for v in value) or "none"
    return str(value)


def axis_name(key: str) -> str:
    """``model.options.depth`` -> ``depth``; ``model.name`` -> ``model``."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


@dataclass(frozen=True)
class Cell:
    """One run of a benchmark: a method, one grid combination and a seed, with its resolved config."""

    method: str
    variant: tuple[tuple[str, Any], ...]
    seed: int
    config: Config
    root: Path

    @property
    def group(self) -> str:
        """The method label shared by all seeds: ``gn`` or ``gn (depth=4)``."""
        settings = ", ".join(f"{axis_name(k)}={value_label(v)}" for k, v in self.variant)
        if self.method and settings:
            return f"{self.method} ({settings})"
        return self.method or settings or "base"

    @property
    def id(self) -> str:
        parts = [self.method] + [f"{axis_name(k)}-{value_label(v)}" for k, v in self.variant] + [f"seed{self.seed}"]
        return re.sub(r"[^\w.+-]+", "-", "__".join(p for p in parts if p))

    config_path = property(lambda self: self.root / "configs" / f"{self.id}.yaml")
    run_dir = property(lambda self: self.root / "runs" / self.id)
    log_path = property(lambda self: self.root / "logs" / f"{self.id}.log")
    files = property(lambda self: RunFiles(self.run_dir))

    @property
    def finished(self) -> bool:
        return self.files.summary.is_file()

    def command(self) -> list[str]:
        """The ``gnbench train`` command of this cell: resume when a checkpoint exists, else start."""
        if self.files.latest_checkpoint.is_file():
            return ["gnbench", "train", str(self.run_dir), "--resume", "--no-progress"]
        return ["gnbench", "train", str(self.config_path), "--out", str(self.run_dir), "--no-progress"]


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"train.steps": 5}`` -> ``{"train": {"steps": 5}}`` (later keys merge into earlier ones)."""
    result: dict[str, Any] = {}
    for key, value in dotted.items():
        for part in reversed(key.split(".")):
            value = {part: value}
        result = deep_merge(result, value)
    return result


def apply_fragment(data: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """``fragment`` on top of ``data``: components replaced wholesale, everything else deep-merged."""
    merged = deep_merge(data, {k: v for k, v in fragment.items() if k not in COMPONENT_KEYS})
    merged.update({k: v for k, v in fragment.items() if k in COMPONENT_KEYS})
    return merged


def difference(data: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """What ``data`` changes relative to ``base``: components whole, other mappings key by key."""
    changed = {}
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in COMPONENT_KEYS:
            inner = difference(value, base[key])
            if inner:
                changed[key] = inner
        elif key not in base or base[key] != value:
            changed[key] = value
    return changed


def output_root(spec: BenchSpec, out: str | Path | None = None) -> Path:
    """Where a benchmark writes: ``out`` if given, else the spec's ``out``, else ``runs/bench/<name>``."""
    return Path(out or spec.out or Path("runs") / "bench" / spec.name)


def expand(spec: BenchSpec, spec_path: str | Path, root: Path, overrides: list[str] | None = None) -> list[Cell]:
    """All cells, seed-major (every method's first seed comes first); each config is validated.

    Layers, each over the previous: ``base``, ``set``, the method (a recipe file contributes what it
    changes relative to ``base``), the grid values, ``overrides`` (``--set`` items), the seed.
    """
    spec_path = Path(spec_path)
    base = resolve_bases(spec_path.parent / spec.base)
    shared = apply_fragment(base, nest(spec.set))
    extra = parse_overrides(overrides or [])
    methods = spec.methods or {"": {}}
    combinations = list(itertools.product(*[[(key, v) for v in values] for key, values in spec.grid.items()]))
    cells = []
    for seed in spec.seeds:
        for method, fragment in methods.items():
            if isinstance(fragment, str):
                fragment = difference(resolve_bases(spec_path.parent / fragment), base)
            for variant in combinations:
                data = apply_fragment(shared, fragment)
                for key, value in variant:
                    data = apply_fragment(data, nest({key: value}))
                data = deep_merge(apply_fragment(data, extra), {"train": {"seed": seed}})
                where = ", ".join([f"method '{method}'"] * bool(method) + [f"{k}={value_label(v)}" for k, v in variant])
                config = config_from_dict(data, source=f"{spec_path} ({where or 'base'}, seed {seed})")
                cells.append(Cell(method, tuple(variant), seed, config, root))
    return cells


# -- running ---------------------------------------------------------------------------------------
def first_difference(old: Any, new: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two plain-data configs differ, with both values, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if old == new else (prefix.rstrip("."), old, new)


def check_unchanged(cell: Cell) -> None:
    """Refuse to skip or resume a run that was started with a different config than the spec gives now.

    The saved config is read through the current schema, so keys added since (with their defaults)
    do not count as a change.
    """
    if not cell.files.config.is_file():
        return
    found = first_difference(load_config(cell.files.config).to_dict(), cell.config.to_dict())
    if found:
        key, old, new = found
        raise GnPluginError(
            f"{cell.run_dir} was run with {key}={old!r} but the spec now gives {new!r}; "
            "delete that folder or choose another --out"
        )


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_jobs(jobs: int | str) -> int:
    """``auto``: one job per GPU when there are GPUs, else one per CPU core."""
    if jobs != "auto":
        return int(jobs)
    return len(visible_gpus()) or cpu_cores()


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (honouring ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


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


def run_cells(cells: list[Cell], jobs: int, log: Callable[[str], None] = print) -> list[Cell]:
    """Run ``cells`` as ``gnbench train`` processes, ``jobs`` at a time; returns the cells that failed.

    Each process writes its output to the cell's log file.
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
                command = [sys.executable, "-m", "gn_plugin.runner.cli", *cell.command()[1:]]
                process = subprocess.run(command, check=False, stdout=output, stderr=subprocess.STDOUT, env=environments[slot])
        finally:
            slots.put(slot)
        return process.returncode, time.perf_counter() - started

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run, cell): cell for cell in cells}
        for done, future in enumerate(as_completed(futures), 1):
            cell = futures[future]
            code, seconds = future.result()
            if code == 0:
                log(f"[{done}/{len(cells)}] {cell.id}: finished in {seconds:.0f} s")
            else:
                failed.append(cell)
                lines = cell.log_path.read_text().strip().splitlines() or ["(no output)"]
                log(f"[{done}/{len(cells)}] {cell.id}: FAILED (exit {code}): {lines[-1]}")
    return failed


# -- the real-vs-real floor ------------------------------------------------------------------------
def floor_key(config: Config) -> str:
    """Cells with the same data, model and evaluation share one floor."""
    relevant = {k: v for k, v in config.to_dict().items() if k in ("data", "model", "eval")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def compute_floors(cells: list[Cell], root: Path) -> dict[str, dict[str, Any]]:
    """Real-vs-real metrics per distinct data/model/eval setting, computed once and kept in ``floor.json``."""
    from gn_plugin.runner.components import build_dataset_and_models
    from gn_plugin.runner.evaluate import build_evaluator

    path = root / "floor.json"
    floors = json.loads(path.read_text()) if path.is_file() else {}
    for cell in cells:
        key = floor_key(cell.config)
        if key in floors:
            continue
        dataset, _ = build_dataset_and_models(cell.config)
        evaluator = build_evaluator(cell.config, dataset, floor_device(cell.config), with_floor=True)
        held_out = evaluator.held_out
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


def floor_device(config: Config) -> str:
    import torch

    if config.train.device != "auto":
        return config.train.device
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- the command -----------------------------------------------------------------------------------
@dataclass
class Invocation:
    """What one ``gnbench bench`` call did: timings, counts and the machine, appended to ``invocations.jsonl``."""

    started_at: str
    elapsed_s: float
    jobs: int
    executed: int
    skipped: int
    failed: list[str]
    command: str
    machine: dict[str, Any]
    load: dict[str, float] | None  # system load average: 1-min before starting, 15-min when done


def load_average() -> tuple[float, float, float] | None:
    """The system's 1-, 5- and 15-minute load averages, where the OS reports them."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def prepare(spec_path: str | Path, out: str | Path | None, overrides: list[str] | None) -> tuple[BenchSpec, list[Cell]]:
    """Load the spec, expand its cells, write their configs and check finished runs still match."""
    spec = load_spec(spec_path)
    cells = expand(spec, spec_path, output_root(spec, out), overrides)
    for cell in cells:
        check_unchanged(cell)
        cell.config_path.parent.mkdir(parents=True, exist_ok=True)
        save_config(cell.config, cell.config_path)
    return spec, cells


def execute(
    cells: list[Cell], jobs: int, *, print_commands: bool = False, log: Callable[[str], None] = print
) -> Invocation | None:
    """Run the unfinished cells (or only print their commands); records the invocation in the output folder."""
    from gn_plugin.runner.report import machine_info

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
        with open(root / "invocations.jsonl", "a") as file:
            file.write(json.dumps(invocation.__dict__) + "\n")
    return invocation


def read_invocations(root: Path) -> list[dict[str, Any]]:
    """The recorded invocations that ran something, oldest first."""
    path = root / "invocations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_benchmark(
    spec_path: str | Path,
    *,
    jobs: int | None = None,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    print_commands: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Run a benchmark spec end to end; returns the report files written (none with ``print_commands``).

    The docs page named by the spec is written only when no ``overrides`` are given: a modified
    benchmark is not the published one.
    """
    from gn_plugin.runner.report import write_docs_page, write_report

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
        if spec.docs and not overrides:
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
    run_benchmark(args.spec, jobs=args.jobs, out=args.out, overrides=args.set, print_commands=args.print_commands)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gnbench bench``."""
    bench = subparsers.add_parser(
        "bench", help="run methods head to head from a benchmark spec; write results.csv, results.md, plots"
    )
    bench.add_argument("spec", help="benchmark spec YAML, e.g. yaml_configs/bench/digits.yaml")
    add_arguments(bench)
    bench.set_defaults(handler=command_bench)
