"""Benchmark specs: the methods, grid and seeds of a head-to-head run, expanded into cells.

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
replace the layer below wholesale (so ``sn`` never inherits ``gn-cr``'s options). Output paths
(``out``, ``docs``) are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from gn_plugin.config import (
    RECIPES,
    Config,
    Strict,
    config_from_dict,
    deep_merge,
    format_validation_error,
    load_config,
    parse_overrides,
    read_yaml,
    resolve_bases,
    save_config,
)
from gn_plugin.errors import GnPluginError
from gn_plugin.metrics.base import get_metric
from gn_plugin.training.build import model_resolution
from gn_plugin.training.run_dir import RunFiles

#: Config keys a method fragment replaces wholesale instead of merging key by key.
COMPONENT_KEYS = ("norm", "loss", "regularizers")
NAME_PATTERN = r"^[\w.+-]+$"
SELECTED_STAGES = ("best", "equal_time")  # stages chosen on the evaluations they report


class PrimaryComparison(Strict):
    """The one comparison the benchmark is run to decide: its page's headline and verdicts. Every other
    table of the page (other metrics, generators and stages) is exploratory."""

    metric: str | None = Field(None, description="the metric; one of the spec's `metrics` (default: the first of them)")
    generator: Literal["raw", "ema"] | None = Field(
        None, description="the generator scored (default: the base config's `eval.best_generator`)"
    )
    stage: Literal["final"] = Field(
        "final",
        description="the evaluation compared: final, the last one. best and best within T are chosen on the "
        "evaluations they report, so they stay exploratory",
    )
    margin: float | None = Field(
        None,
        gt=0,
        description="equivalence margin in the metric's units: a pair is called equivalent only when two "
        "one-sided Welch tests (TOST, Holm over the pairs) put the difference within ± margin; without one, "
        "no pair is ever called equivalent",
    )

    @field_validator("stage", mode="before")
    @classmethod
    def _unselected_stage(cls, stage: Any) -> Any:
        if stage in SELECTED_STAGES:
            raise ValueError(
                f"'{stage}' is chosen on the same evaluations it reports (an optimistic pick), so it cannot be "
                "the primary comparison; use final (best and best within T stay in the exploratory tables)"
            )
        return stage


class PaperNumbers(Strict):
    """Published numbers to set beside this benchmark's: a table of the authors' values and the ones measured
    here (the primary comparison's generator and stage, mean over seeds)."""

    source: str = Field(description="where the numbers come from and under which protocol (data, model, metric code)")
    metrics: list[str] = Field(min_length=1, description="the metrics of each entry, in order (one of the spec's `metrics` each)")
    values: dict[str, str] = Field(
        description="method as the tables name it (`gn`, `gn (activation=elu)`) -> the authors' values, "
        "written `7.66 / 21.69` in the order of `metrics`, or in words"
    )


class LauncherSettings(Strict):
    """Where and how ``gnbench bench --launcher slurm`` runs the cells: one Slurm job array, one task per cell.

    Each key can also be given on the command line (``--launcher-set partition=gpu time_min=240``).
    """

    partition: str | None = Field(None, description="Slurm partition (sbatch --partition); none: the cluster's default")
    account: str | None = Field(None, description="account to charge (sbatch --account)")
    qos: str | None = Field(None, description="quality of service (sbatch --qos)")
    constraint: str | None = Field(None, description="node features required (sbatch --constraint), e.g. a100")
    time_min: int = Field(
        1440, ge=1, description="time limit of one job in minutes (sbatch --time); a cell that needs longer is "
        "checkpointed and requeued, see max_num_timeout",
    )
    gpus_per_cell: int | None = Field(
        None, ge=0, description="GPUs per cell; none: 1 where the cells train on CUDA (train.device auto or cuda), "
        "else 0. More than 1 runs the cell under torchrun",
    )
    cpus_per_cell: int | None = Field(
        None, ge=1, description="CPU cores per cell (sbatch --cpus-per-task); none: data.num_workers + 1, at least 2. "
        "The cell's OMP_NUM_THREADS",
    )
    mem: str | None = Field(None, description="memory per cell (sbatch --mem), e.g. 32G; none: the cluster's default")
    array_parallelism: int | None = Field(
        None, ge=1, description="most cells running at once (the %N of sbatch --array); none: all of them"
    )
    sbatch: dict[str, Any] = Field(
        default_factory=dict, description="further sbatch options, name -> value ({exclude: node7, mail-type: END})"
    )
    setup: list[str] = Field(
        default_factory=list,
        description="shell lines each job runs before the cell (module load ..., source venv/bin/activate)",
    )
    signal_delay_s: int = Field(
        120, ge=1, description="seconds between Slurm's warning signal (SIGUSR2) and the end of a job's time: "
        "the cell finishes its step and writes its checkpoint within them (see the Clusters page for the measured write time)",
    )
    max_num_timeout: int | None = Field(
        None, ge=0, description="times a cell may be requeued at its time limit; none: the time slots the cell needs "
        "by the estimate, plus 2",
    )
    perf: str | None = Field(
        None, description="a `gnbench perf --json` file whose step times estimate the GPU-hours of cells not yet "
        "measured (relative to the working directory)",
    )


class BenchSpec(Strict):
    """A benchmark: cells = methods × grid × seeds, all sharing ``base`` and ``set``."""

    name: str = Field(pattern=NAME_PATTERN, description="short name; the default output folder is runs/bench/<name>")
    title: str = Field("", description="heading of the results page")
    description: str = Field(
        "",
        description="Markdown for the results page: the text before its first `##` heading opens the page, "
        "its `##` sections follow the results",
    )
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
        default_factory=lambda: ["fid", "kid", "is"],
        description="metrics reported, each at every stage for both generators (the cells evaluate `eval.metrics`)",
    )
    launcher: LauncherSettings = Field(
        default_factory=LauncherSettings, description="Slurm settings for --launcher slurm (the local launcher ignores them)"
    )
    compare: Literal["all", "one_factor"] = Field(
        "all",
        description="which pairs of methods the tests compare: all, or one_factor (only pairs that differ in one "
        "factor, the method or one grid key: the questions an ablation asks); Holm adjusts over the pairs compared",
    )
    primary: PrimaryComparison = Field(
        default_factory=PrimaryComparison,
        description="the one comparison the benchmark decides (metric, generator, stage, equivalence margin)",
    )
    paper: PaperNumbers | None = Field(None, description="published numbers to set beside these on the page")
    validate_metrics: bool = Field(
        False,
        description="also score degraded real images as the samples are scored (do the metrics rank them?) and check "
        "the runs' samples for copies of training images (`gnbench validate-metrics`); both go on the page. Needs a "
        "data set with a held-out split",
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
            written = [json.dumps(value, sort_keys=True) for value in values]
            twice = next((value for value, text in zip(values, written) if written.count(text) > 1), None)
            if twice is not None:
                raise ValueError(f"grid key '{key}' lists {value_label(twice)} more than once")
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
        spec = BenchSpec.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise GnPluginError(format_validation_error(exc, str(path), BenchSpec)) from None
    named = [("primary.metric", spec.primary.metric)]
    named += [("paper.metrics", metric) for metric in (spec.paper.metrics if spec.paper else [])]
    for key, metric in named:
        if metric is not None and metric not in spec.metrics:
            raise GnPluginError(f"{path}: {key}: '{metric}' is not one of the spec's metrics ({', '.join(spec.metrics)})")
    return spec


# -- cells -----------------------------------------------------------------------------------------
def value_label(value: Any) -> str:
    """Short text for a grid value that tells distinct values apart: ``gn``, ``gn-cr(consistency_weight=10)``,
    names joined by +, or the value itself."""
    if isinstance(value, dict) and "name" in value:
        options = {**value.get("options", {}), **{k: v for k, v in value.items() if k not in ("name", "options")}}
        settings = ", ".join(f"{key}={value_label(option)}" for key, option in options.items())
        return f"{value['name']}({settings})" if settings else str(value["name"])
    if isinstance(value, dict):
        return ", ".join(f"{key}={value_label(inner)}" for key, inner in value.items())
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
    suffix: str = ""  # a short hash of the config where two distinct cells' labels would share a folder name

    @property
    def group(self) -> str:
        """The method label shared by all seeds: ``gn`` or ``gn (depth=4)``."""
        settings = ", ".join(f"{axis_name(k)}={value_label(v)}" for k, v in self.variant)
        if self.method and settings:
            return f"{self.method} ({settings})"
        return self.method or settings or "base"

    @property
    def factors(self) -> tuple[tuple[str, Any], ...]:
        """The method and each grid value: what sets this cell's group apart from the others."""
        return (("method", self.method), *self.variant)

    @property
    def id(self) -> str:
        """The cell's folder name: method, grid values and seed (distinct cells have distinct ids)."""
        parts = [self.method] + [f"{axis_name(k)}-{value_label(v)}" for k, v in self.variant] + [f"seed{self.seed}"]
        parts = [re.sub(r"[^\w.+-]+", "-", part).strip("-") for part in parts if part]
        return "__".join(parts) + (f"__{self.suffix}" if self.suffix else "")

    config_path = property(lambda self: self.root / "configs" / f"{self.id}.yaml")
    run_dir = property(lambda self: self.root / "runs" / self.id)
    log_path = property(lambda self: self.root / "logs" / f"{self.id}.log")
    files = property(lambda self: RunFiles(self.run_dir))

    @property
    def finished(self) -> bool:
        return self.files.summary.is_file()

    def command(self) -> list[str]:
        """The ``gnbench train`` command of this cell: resume when a checkpoint exists, else start."""
        return self.resume_command() if self.files.latest_checkpoint.is_file() else self.new_command()

    def new_command(self) -> list[str]:
        return ["gnbench", "train", str(self.config_path), "--out", str(self.run_dir), "--no-progress"]

    def resume_command(self) -> list[str]:
        return ["gnbench", "train", str(self.run_dir), "--resume", "--no-progress"]


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
    return distinct(cells, spec_path)


def config_digest(config: Config) -> str:
    """Short hash of a resolved config."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


def distinct(cells: list[Cell], spec_path: Path) -> list[Cell]:
    """``cells``, refusing two with the same config and giving distinct configs distinct ids.

    Where two distinct cells' labels would name one folder, each gets a short hash of its config.
    """
    seen: dict[str, Cell] = {}
    for cell in cells:
        earlier = seen.setdefault(config_digest(cell.config), cell)
        if earlier is not cell:
            raise GnPluginError(
                f"{spec_path}: cells '{earlier.id}' and '{cell.id}' have the same config; drop one of them"
            )
    ids = [cell.id for cell in cells]
    return [
        dataclasses.replace(cell, suffix=config_digest(cell.config)) if ids.count(cell.id) > 1 else cell
        for cell in cells
    ]


#: ``eval`` keys that choose or sample generators: the floor scores real images only, so they cannot change it.
FLOOR_FREE_EVAL_KEYS = ("every", "best_metric", "best_generator", "generator_mode", "cache_dir")


def floor_key(config: Config) -> str:
    """Cells with the same data, evaluation and image size share one floor (the floor scores real images
    only, so the models matter only through the resolution they set, and the evaluation only through what
    scores images: sample count, metrics, feature pipeline)."""
    data = config.to_dict()
    relevant = {"data": data["data"], "eval": {k: v for k, v in data["eval"].items() if k not in FLOOR_FREE_EVAL_KEYS}}
    relevant["resolution"] = config.data.resolution or model_resolution(config)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


# -- what a finished run must still match ----------------------------------------------------------
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


def find_spec(spec: str | Path) -> Path:
    """A spec file's path; a bare name (``digits``) is the spec of that name shipped with the package."""
    path = Path(spec)
    if path.suffix or path.parent != Path("."):
        return path  # a path: reading it reports a missing file
    shipped = RECIPES / "bench" / f"{path.name}.yaml"
    if not shipped.is_file():
        available = ", ".join(sorted(p.stem for p in (RECIPES / "bench").glob("*.yaml")))
        raise GnPluginError(f"no shipped benchmark spec named '{spec}' (shipped: {available}); or give a spec file")
    return shipped


def prepare(spec_path: str | Path, out: str | Path | None, overrides: list[str] | None) -> tuple[BenchSpec, list[Cell]]:
    """Load the spec, expand its cells, write their configs and check finished runs still match."""
    spec = load_spec(spec_path)
    cells = expand(spec, spec_path, output_root(spec, out), overrides)
    groups = list(dict.fromkeys(cell.group for cell in cells))
    for method in spec.paper.values if spec.paper else []:
        if method not in groups:
            raise GnPluginError(f"{spec_path}: paper.values: '{method}' is not a method of this spec ({', '.join(groups)})")
    for cell in cells:
        check_unchanged(cell)
        cell.config_path.parent.mkdir(parents=True, exist_ok=True)
        save_config(cell.config, cell.config_path)
    return spec, cells
