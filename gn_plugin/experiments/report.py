"""Benchmark data and its statistics: per-run rows, curves, the floor and the cost, then summaries over
seeds and the comparisons, the primary one first.

Everything a report shows flows one way: run directories → the published data (:data:`DATA_FILES`,
written by :func:`write_data`) → :func:`read_data` → :func:`analyse` → Markdown
(:mod:`gn_plugin.experiments.tables`). The bench renders its page from the files it has just written,
so a page can be rebuilt from its published files and the spec alone, and a test does exactly that.

Each run is reported for both generators (raw and EMA) at three stages:

- ``final``: the last evaluation, fixed before the run: the stage of the primary comparison;
- ``best``: the evaluation with the best ``eval.best_metric`` of that generator: chosen on the very
  evaluations it reports, so it is optimistic;
- ``equal_time``: the best evaluation within T, the wall time the fastest method needed for its
  whole budget, so a slower method is not credited for time it was given (chosen like ``best``).
"""

from __future__ import annotations

import csv
import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gn_plugin.experiments.invocations import read_invocations
from gn_plugin.experiments.machine import describe_machine
from gn_plugin.experiments.spec import BenchSpec, Cell, floor_key
from gn_plugin.experiments.statistics import COMPARISON_COLUMNS, compare_all, summarize
from gn_plugin.metrics.base import higher_is_better

STAGES = ("final", "best", "equal_time")
ALPHA = 0.05  # two-sided; family-wise over the pairs of one metric, generator and stage (Holm)
POWER = 0.8
CSV_COMPARISON_COLUMNS = ["family", "metric", "generator", "stage", *COMPARISON_COLUMNS]
SUMMARY_COLUMNS = ["method", "generator", "stage", "metric", "n", "mean", "median", "std", "ci_low", "ci_high", "ci_method"]
DATA_FILES = ("results.csv", "curves.csv", "floor.csv", "cost.csv")
#: Published where the spec asks for them (``validate_metrics``): degraded real images scored as samples are,
#: and the runs' nearest-neighbour distances to the training images (:mod:`gn_plugin.experiments.metric_validation`).
CHECK_FILES = ("metric_validation.csv", "memorisation.csv")
COST_COLUMNS = [
    "started_at", "executed", "skipped", "failed", "stopped", "jobs", "elapsed_s", "load_before_1min",
    "load_after_15min", "machine", "out", "command",
]
DERIVED_FILES = ("summary.csv", "comparisons.csv")
#: Columns read back as text; every other column of the data files is a number (or empty for none).
TEXT_COLUMNS = {
    "method", "generator", "run", "status", "floor", "kind", "data", "space", "started_at", "machine",
    "stopped", "command", "out", "family", "metric", "stage", "method_a", "method_b", "verdict", "ci_method",
    "degradation", "flagged",
}


# -- rows: one per run and generator ----------------------------------------------------------------
def evaluations(cell: Cell, generator: str) -> list[dict[str, Any]]:
    """The training-time evaluations of one generator (``raw`` or ``ema``) of a run, in step order."""
    return [r for r in cell.files.read_results() if r["generator"] == generator and "checkpoint" not in r]


def generators(cell: Cell) -> list[str]:
    """Both generators, the one the config reports (``eval.best_generator``) first."""
    chosen = cell.config.eval.best_generator
    return [chosen, "raw" if chosen == "ema" else "ema"]


def training_speed(cell: Cell) -> float | None:
    """Median generator steps per second over the logging intervals (robust to evaluation pauses)."""
    speeds = [record.get("speed/steps_per_s") for record in cell.files.read_scalars()]
    speeds = [s for s in speeds if s is not None]
    return statistics.median(speeds) if speeds else None


def best_record(records: Iterable[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The record with the best value of ``metric`` (the first of equals), or None."""
    scored = [r for r in records if r.get(metric) is not None]
    if not scored:
        return None
    return (max if higher_is_better(metric) else min)(scored, key=lambda r: r[metric])


def time_limit(cells: Sequence[Cell]) -> float | None:
    """T: per method, the longest wall time one of its finished runs took to reach its last evaluation;
    the smallest of these over methods. None when a finished run has no wall times on record."""
    longest: dict[str, float] = {}
    for cell in cells:
        if not cell.finished:
            continue
        records = evaluations(cell, cell.config.eval.best_generator)
        if not records or records[-1].get("wall_time_s") is None:
            return None
        longest[cell.group] = max(longest.get(cell.group, 0.0), records[-1]["wall_time_s"])
    return min(longest.values()) if longest else None


def run_rows(cell: Cell, metrics: Sequence[str], limit: float | None) -> list[dict[str, Any]]:
    """Two rows of ``results.csv`` (one per generator): status, cost, and each metric at each stage."""
    key = cell.config.eval.best_metric
    rows = []
    for generator in generators(cell):
        row: dict[str, Any] = {"method": cell.group, "seed": cell.seed, "generator": generator, "run": cell.id}
        records = evaluations(cell, generator) if cell.finished else []
        if not records:
            rows.append({**row, "status": "unfinished"})
            continue
        summary = cell.files.read_summary()
        row.update(
            status="finished", steps=summary["steps"], wall_time_s=summary["wall_time_s"],
            steps_per_s=training_speed(cell), time_limit_s=limit,
        )
        within = [r for r in records if limit is not None and r.get("wall_time_s", float("inf")) <= limit]
        picked = {
            "final": records[-1],
            "best": best_record(records, key) or records[-1],
            "equal_time": best_record(within, key) or (within[-1] if within else None),
        }
        for stage, record in picked.items():
            row[f"{stage}_step"] = record["step"] if record else None
            row.update({f"{stage}_{m}": record.get(m) if record else None for m in metrics})
        rows.append(row)
    return rows


def curve_rows(cell: Cell, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """``curves.csv`` rows of a finished run: every evaluation of both generators."""
    if not cell.finished:
        return []
    return [
        {"method": cell.group, "seed": cell.seed, "generator": generator, "run": cell.id, "step": r["step"],
         "wall_time_s": r.get("wall_time_s"), **{m: r.get(m) for m in metrics}}
        for generator in generators(cell) for r in evaluations(cell, generator)
    ]


def floor_rows(key: str, floor: dict[str, Any]) -> list[dict[str, Any]]:
    """``floor.csv`` rows of one floor: a row per draw, then its context (held-out images, distinct training
    images where the reference is a held-out split, or halves)."""
    shared = {
        "floor": key, "data": floor["data"], "space": floor["space"], "training_images": floor["training_images"],
        "reference_images": floor.get("reference_images"),
    }
    rows = [{**shared, "kind": "draw", "draw": i, "images": floor["images"], **draw} for i, draw in enumerate(floor["draws"])]
    context = floor["context"]
    rows.append({**shared, "kind": context["kind"], "draw": None, "images": context["images"], **context["metrics"]})
    return rows


def cost_rows(root: Path) -> list[dict[str, Any]]:
    """``cost.csv``: the recorded invocations (:mod:`gn_plugin.experiments.invocations`), one row each."""
    rows = []
    for record in read_invocations(root):
        load = record.get("load") or {}
        rows.append({
            "started_at": record["started_at"], "executed": record["executed"], "skipped": record["skipped"],
            "failed": len(record.get("failed", [])), "stopped": record.get("stopped"), "jobs": record["jobs"],
            "elapsed_s": record["elapsed_s"], "load_before_1min": load.get("before_1min"),
            "load_after_15min": load.get("after_15min"), "machine": describe_machine(record["machine"]),
            "out": root.as_posix(), "command": record.get("command"),
        })
    return rows


@dataclass
class BenchData:
    """The published data of a benchmark: the rows of :data:`DATA_FILES`, and of :data:`CHECK_FILES` where present."""

    rows: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    floors: list[dict[str, Any]]
    cost: list[dict[str, Any]]
    degradations: list[dict[str, Any]] = field(default_factory=list)
    memorisation: list[dict[str, Any]] = field(default_factory=list)


def collect(spec: BenchSpec, cells: list[Cell], floors: dict[str, dict[str, Any]], root: Path) -> BenchData:
    """The data of a benchmark's cells, read from their run directories, with the floors they use."""
    limit = time_limit(cells)
    used = dict.fromkeys(floor_key(c.config) for c in cells if c.finished)
    return BenchData(
        rows=[row for cell in cells for row in run_rows(cell, spec.metrics, limit)],
        curves=[row for cell in cells for row in curve_rows(cell, spec.metrics)],
        floors=[row for key in used if key in floors for row in floor_rows(key, floors[key])],
        cost=cost_rows(root),
    )


# -- CSV files -------------------------------------------------------------------------------------
def write_csv(rows: list[dict[str, Any]], path: Path, columns: Sequence[str] | None = None) -> None:
    """Rows as CSV; columns are ``columns`` or the union of all rows' keys, in first-seen order. None is empty."""
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file written by :func:`write_csv`: empty cells None, numbers numbers (but :data:`TEXT_COLUMNS`)."""

    def value(column: str, text: str) -> Any:
        if column in TEXT_COLUMNS:
            return text or None
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            return float(text)

    with open(path, newline="") as file:
        return [{column: value(column, text) for column, text in row.items()} for row in csv.DictReader(file)]


def write_data(data: BenchData, folder: Path) -> list[Path]:
    """The data files (:data:`DATA_FILES`) in ``folder``."""
    paths = [folder / name for name in DATA_FILES]
    for rows, path in zip((data.rows, data.curves, data.floors), paths):
        write_csv(rows, path, None if rows else ["method"])
    write_csv(data.cost, paths[3], COST_COLUMNS)
    return paths


def read_data(folder: Path) -> BenchData:
    """The data files in ``folder``, as :func:`write_data` wrote them, and the :data:`CHECK_FILES` present."""
    checks = [read_csv(folder / name) if (folder / name).is_file() else [] for name in CHECK_FILES]
    return BenchData(*(read_csv(folder / name) for name in DATA_FILES), *checks)


def write_derived(report: BenchReport, folder: Path) -> list[Path]:
    """``summary.csv`` and ``comparisons.csv``, computed from ``results.csv``, in ``folder``."""
    paths = [folder / name for name in DERIVED_FILES]
    write_csv(report.summaries, paths[0], SUMMARY_COLUMNS)
    write_csv(report.comparisons, paths[1], CSV_COMPARISON_COLUMNS)
    return paths


# -- statistics over seeds --------------------------------------------------------------------------
def values_by_method(rows: Iterable[dict[str, Any]], generator: str, column: str) -> dict[str, list[float]]:
    """Per method (first-seen order): the finished runs' values of ``column`` for ``generator``."""
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["method"], [])
        if row["generator"] == generator and row["status"] == "finished" and row.get(column) not in (None, ""):
            values[row["method"]].append(float(row[column]))
    return values


def generators_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["generator"] for r in rows))


def summaries(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """``summary.csv``: n, mean, median, std and the t interval of the mean per method, generator, stage and metric."""
    result = []
    for generator in generators_of(rows):
        for stage in STAGES:
            for metric in metrics:
                for method, values in values_by_method(rows, generator, f"{stage}_{metric}").items():
                    if values:
                        summary = asdict(summarize(values))
                        result.append({"method": method, "generator": generator, "stage": stage, "metric": metric, **summary})
    return result


@dataclass(frozen=True)
class Primary:
    """The primary comparison, resolved: the spec's ``primary`` with its defaults filled in."""

    metric: str
    generator: str
    stage: str
    margin: float | None

    def family(self) -> tuple[str, str, str]:
        return self.metric, self.generator, self.stage


def primary_comparison(spec: BenchSpec, cells: Sequence[Cell]) -> Primary:
    """The spec's primary comparison; its metric defaults to the first of ``metrics``, its generator to
    the base config's ``eval.best_generator``."""
    declared = spec.primary
    generator = declared.generator or cells[0].config.eval.best_generator
    return Primary(declared.metric or spec.metrics[0], generator, declared.stage, declared.margin)


def compared_pairs(cells: Sequence[Cell], compare: str) -> list[tuple[str, str]] | None:
    """The pairs of method groups the tests compare: None for all of them; for ``one_factor`` the pairs
    whose cells differ in exactly one factor (the method or one grid key)."""
    if compare == "all":
        return None
    factors = {c.group: dict(c.factors) for c in cells}
    return [
        (a, b)
        for a, b in itertools.combinations(factors, 2)
        if sum(factors[a][key] != factors[b][key] for key in factors[a]) == 1
    ]


def comparisons(
    rows: list[dict[str, Any]],
    metrics: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
    primary: Primary | None = None,
) -> list[dict[str, Any]]:
    """``comparisons.csv`` rows (:data:`CSV_COMPARISON_COLUMNS`), the primary family first.

    Each metric, generator and stage is one family: every pair of methods with values (or those of
    ``pairs``), Holm-adjusted over the family. Only the primary family is tested for equivalence (with
    the primary comparison's margin) and is labelled ``primary``; every other family is ``exploratory``.
    ``seeds_needed``: the seeds per method, more than were run, at which the observed difference and
    spreads would reach ``POWER`` with Welch's test at alpha / (pairs in the family).
    """
    families = [(m, g, s) for m in metrics for g in generators_of(rows) for s in STAGES]
    if primary is not None and primary.family() in families:
        families.remove(primary.family())
        families.insert(0, primary.family())
    result = []
    for metric, generator, stage in families:
        is_primary = primary is not None and (metric, generator, stage) == primary.family()
        groups = {m: v for m, v in values_by_method(rows, generator, f"{stage}_{metric}").items() if v}
        present = None if pairs is None else [(a, b) for a, b in pairs if a in groups and b in groups]
        if len(groups) < 2 or present == []:
            continue
        family = compare_all(
            groups, lower_is_better=not higher_is_better(metric), alpha=ALPHA, pairs=present,
            margin=primary.margin if is_primary else None,
        )
        label = "primary" if is_primary else "exploratory"
        result += [{"family": label, "metric": metric, "generator": generator, "stage": stage, **c.as_row()} for c in family]
    return result


@dataclass
class BenchReport:
    """Everything a benchmark report shows, computed from its data and its spec."""

    spec: BenchSpec
    cells: list[Cell]  # the spec's cells: configs (their run directories need not exist)
    data: BenchData
    primary: Primary
    summaries: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data.rows

    @property
    def time_limit_s(self) -> float | None:
        return next((r["time_limit_s"] for r in self.rows if r.get("time_limit_s") is not None), None)

    def family(self, metric: str, generator: str, stage: str) -> list[dict[str, Any]]:
        return [c for c in self.comparisons if (c["metric"], c["generator"], c["stage"]) == (metric, generator, stage)]

    @property
    def primary_family(self) -> list[dict[str, Any]]:
        return [c for c in self.comparisons if c["family"] == "primary"]

    def summary(self, method: str, generator: str, stage: str, metric: str) -> dict[str, Any] | None:
        return next(
            (s for s in self.summaries if (s["method"], s["generator"], s["stage"], s["metric"]) == (method, generator, stage, metric)),
            None,
        )


def analyse(spec: BenchSpec, cells: list[Cell], data: BenchData) -> BenchReport:
    """Summaries and comparisons of a benchmark's data (as :func:`read_data` returns it)."""
    primary = primary_comparison(spec, cells)
    found = comparisons(data.rows, spec.metrics, compared_pairs(cells, spec.compare), primary)
    return BenchReport(spec, cells, data, primary, summaries(data.rows, spec.metrics), found)


def floors_of(report: BenchReport) -> list[list[dict[str, Any]]]:
    """The floor rows, one list per floor."""
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for row in report.data.floors:
        grouped.setdefault(row["floor"], []).append(row)
    return list(grouped.values())


def floor_summary(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The summary of a floor's draws of ``metric``: mean and t interval over the draws."""
    values = [r[metric] for r in rows if r["kind"] == "draw" and r.get(metric) is not None]
    return asdict(summarize(values)) if values else None
