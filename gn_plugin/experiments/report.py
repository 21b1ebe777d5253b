"""Benchmark reports from finished runs: ``results.csv``, ``results.md``, PNG plots and the docs page.

Every number comes from the run directories (``results.jsonl``, ``summary.json``, ``scalars.jsonl``,
checkpoints) and every table says how it was obtained: which generator, which evaluation, how many
seeds, which machine.
"""

from __future__ import annotations

import csv
import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gn_plugin.experiments.invocations import read_invocations
from gn_plugin.experiments.spec import BenchSpec, Cell, floor_key
from gn_plugin.metrics.base import higher_is_better

LABELS = {"fid": "FID", "kid": "KID", "is": "IS", "coverage": "coverage"}
METRIC_SPACES = {
    "digits": "features of the shipped digits classifier (64-d penultimate layer)",
    "inception": "TF-Inception features (clean-fid)",
}


# -- rows and aggregation --------------------------------------------------------------------------
def evaluations(cell: Cell) -> list[dict[str, Any]]:
    """The training-time evaluations of the generator the config reports (``eval.best_generator``)."""
    chosen = cell.config.eval.best_generator
    return [r for r in cell.files.read_results() if r["generator"] == chosen and "checkpoint" not in r]


def training_speed(cell: Cell) -> float | None:
    """Median generator steps per second over the logging intervals (robust to evaluation pauses)."""
    speeds = [record.get("speed/steps_per_s") for record in cell.files.read_scalars()]
    speeds = [s for s in speeds if s is not None]
    return statistics.median(speeds) if speeds else None


def run_row(cell: Cell, metrics: Sequence[str]) -> dict[str, Any]:
    """One CSV row: a run's status, cost, and its metrics at the best and at the final evaluation.

    Best is the evaluation with the best ``eval.best_metric`` (the checkpoint ``best.pt`` keeps).
    """
    row: dict[str, Any] = {"method": cell.group, "seed": cell.seed, "run": cell.id}
    records = evaluations(cell)
    if not cell.finished or not records:
        return {**row, "status": "unfinished"}
    summary = cell.files.read_summary()
    key = cell.config.eval.best_metric
    pick = max if higher_is_better(key) else min
    best = pick((r for r in records if r.get(key) is not None), key=lambda r: r[key], default=records[-1])
    final = records[-1]
    row.update(
        status="finished", generator=cell.config.eval.best_generator, steps=summary["steps"],
        wall_time_s=summary["wall_time_s"], steps_per_s=training_speed(cell), best_step=best["step"],
    )
    row.update({f"best_{m}": best.get(m) for m in metrics})
    row["final_step"] = final["step"]
    row.update({f"final_{m}": final.get(m) for m in metrics})
    return row


def stat_columns(metrics: Sequence[str]) -> list[str]:
    """The numeric columns aggregated over seeds."""
    return [f"best_{m}" for m in metrics] + [f"final_{m}" for m in metrics] + ["wall_time_s", "steps_per_s"]


def aggregate(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Per method (in first-seen order): ``n`` finished runs and ``(mean, sample std)`` of each column.

    The std is None with a single run; a column no run has is ``(None, None)``.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["method"], []).append(row)
    result = []
    for method, members in groups.items():
        finished = [r for r in members if r["status"] == "finished"]
        entry: dict[str, Any] = {"method": method, "n": len(finished), "runs": len(members)}
        for column in columns:
            values = [r[column] for r in finished if r.get(column) is not None]
            mean = statistics.mean(values) if values else None
            entry[column] = (mean, statistics.stdev(values) if len(values) > 1 else None)
        result.append(entry)
    return result


# -- text ------------------------------------------------------------------------------------------
def number(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits (trailing zeros kept), no exponent for ordinary magnitudes."""
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.{digits}g}".rstrip(".")


def stat(mean: float | None, std: float | None) -> str:
    """``mean ± std`` (the std to two significant digits), or the mean alone."""
    return number(mean) if std is None or mean is None else f"{number(mean)} ± {number(std, 2)}"


def header(metric: str, which: str) -> str:
    arrow = "↑" if higher_is_better(metric) else "↓"
    return f"{which} {LABELS.get(metric, metric)} {arrow}"


def results_table(groups: list[dict[str, Any]], floors: list[dict[str, Any]], metrics: Sequence[str]) -> str:
    """Markdown table: mean ± std over seeds per method, the best mean of each metric in bold, then the floor."""
    names = [header(m, "best") for m in metrics] + [header(m, "final") for m in metrics]
    lines = [
        "| method | seeds | " + " | ".join(names) + " | wall time (s) | train steps/s |",
        "|---" * (len(names) + 4) + "|",
    ]
    winners = {}
    for column in stat_columns(metrics)[: 2 * len(metrics)]:
        means = [g[column][0] for g in groups if g[column][0] is not None]
        if means:
            winners[column] = (max if higher_is_better(column.split("_", 1)[1]) else min)(means)
    for group in groups:
        cells = []
        for column in stat_columns(metrics):
            text = stat(*group[column])
            cells.append(f"**{text}**" if column in winners and group[column][0] == winners[column] else text)
        seeds = f"{group['n']}" if group["n"] == group["runs"] else f"{group['n']} of {group['runs']}"
        lines.append(f"| {group['method']} | {seeds} | " + " | ".join(cells) + " |")
    for floor in floors:
        values = [number(floor["metrics"].get(m)) for m in metrics]
        lines.append("| *real-vs-real floor* | – | " + " | ".join(values + values) + " | – | – |")
    return "\n".join(lines)


def table_notes(cells: list[Cell], floors: list[dict[str, Any]], jobs: int | None) -> str:
    """How the table's numbers were obtained, as a bullet list."""
    options = cells[0].config.eval
    steps = sorted({c.config.train.steps for c in cells})
    space = METRIC_SPACES.get(floors[0]["space"], floors[0]["space"]) if floors else "the data set's metric space"
    parallel = f"{jobs} runs in parallel" if jobs else "runs in parallel as recorded below"
    lines = [
        "- Mean ± sample standard deviation over the seeds of each method; the best mean of each metric is in bold.",
        (
            f"- Generator: **{options.best_generator.upper()}** (`eval.best_generator`). *best* = at the evaluation "
            f"with the {'highest' if higher_is_better(options.best_metric) else 'lowest'} "
            f"{LABELS.get(options.best_metric, options.best_metric)} (the checkpoint `best.pt` keeps, as the paper "
            f"reports); *final* = at the last evaluation (step {', '.join(map(str, steps))}). "
            f"Evaluated every {options.every or 'end of the'} generator steps."
        ),
        (
            f"- Metrics: {options.num_samples} generated images against the train-split reference, in {space}. "
            "KID is the unbiased estimator, so it can be slightly negative near zero."
        ),
    ]
    for floor in floors:
        lines.append(
            f"- Real-vs-real floor: {floor['images']} real images, {floor['how']}: what a perfect generator scores. "
            f"It uses {'fewer' if floor['images'] < options.num_samples else 'as many'} images than the generated "
            f"samples{', so it carries a larger small-sample bias (FID and KID fall with more images)' if floor['images'] < options.num_samples else ''}."
        )
    lines.append(
        f"- Wall time: the whole run including evaluations ({parallel}); train steps/s: median over the logging "
        "intervals, so evaluation pauses do not count."
    )
    return "\n".join(lines)


def reading_notes(groups: list[dict[str, Any]], floors: list[dict[str, Any]], metric: str = "fid") -> str:
    """Rankings by best and by final ``metric``, which neighbours are separated, and the distance to the floor.

    Separated: the difference of two means exceeds the sum of their standard deviations.
    """
    label, lines = LABELS.get(metric, metric), []
    order = " > " if higher_is_better(metric) else " < "
    for which in ("best", "final"):
        column = f"{which}_{metric}"
        ranked = [g for g in groups if g.get(column, (None, None))[0] is not None]
        ranked.sort(key=lambda g: g[column][0], reverse=higher_is_better(metric))
        if not ranked:
            continue
        lines.append(f"- Mean {which} {label}: " + order.join(f"{g['method']} ({number(g[column][0])})" for g in ranked) + ".")
        for better, worse in itertools.pairwise(ranked):
            gap = abs(worse[column][0] - better[column][0])
            spread = (better[column][1] or 0.0) + (worse[column][1] or 0.0)
            verdict = f"separated ({number(gap)} > {number(spread)})" if gap > spread else f"**not separated** ({number(gap)} ≤ {number(spread)})"
            lines.append(f"    - {better['method']} vs {worse['method']}: {verdict}")
        if which == "best":
            for floor in floors:
                value = floor["metrics"].get(metric)
                if value is None:
                    continue
                below = [g["method"] for g in ranked if g[column][0] - (g[column][1] or 0.0) <= value]
                lines.append(
                    f"- Real-vs-real floor {label} {number(value)}: "
                    + (f"{', '.join(below)} within one std of it; " if below else "every method stays above it by more than one std; ")
                    + (f"the best mean is {number(ranked[0][column][0] / value)}× the floor." if value > 0 else "")
                )
    lines.append(
        "- *Separated*: the difference of two means exceeds the sum of their standard deviations, a simple and "
        "conservative rule for a handful of seeds, not a significance test. Neighbours in the ranking are compared."
    )
    return "\n".join(lines)


# -- files -----------------------------------------------------------------------------------------
def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per run; columns are the union of all rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def floors_of(cells: list[Cell], floors: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The floors the finished cells use, each once."""
    return [floors[k] for k in dict.fromkeys(floor_key(c.config) for c in cells if c.finished) if k in floors]


def report_body(spec: BenchSpec, cells: list[Cell], floors: dict[str, dict[str, Any]], jobs: int | None) -> str:
    """The results table, how it was obtained, and which methods are separated."""
    used = floors_of(cells, floors)
    groups = aggregate([run_row(c, spec.metrics) for c in cells], stat_columns(spec.metrics))
    return "\n\n".join([
        results_table(groups, used, spec.metrics), table_notes(cells, used, jobs),
        "### Reading the table\n\n" + reading_notes(groups, used),
    ])


def last_jobs(root: Path) -> int | None:
    invocations = read_invocations(root)
    return invocations[-1]["jobs"] if invocations else None
