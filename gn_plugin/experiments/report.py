"""Benchmark reports from finished runs: per-run rows, statistics over seeds and pairwise comparisons.

Every number comes from the run directories (``results.jsonl``, ``summary.json``, ``scalars.jsonl``)
and every table says how it was obtained. Each run is reported for both generators (raw and EMA) at
three stages:

- ``best``: the evaluation with the best ``eval.best_metric`` of that generator;
- ``final``: the last evaluation;
- ``equal_time``: the best evaluation within T, the wall time the fastest method needed for its
  whole budget, so a slower method is not credited for time it was given.

``results.csv`` holds one row per run and generator; everything else (``summary.csv``,
``comparisons.csv``, the Markdown) is computed from those rows, so anyone can recompute it.
"""

from __future__ import annotations

import csv
import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gn_plugin.config import EmaConfig
from gn_plugin.experiments.invocations import read_invocations
from gn_plugin.experiments.spec import BenchSpec, Cell, floor_key
from gn_plugin.experiments.statistics import COMPARISON_COLUMNS, compare_all, seeds_needed, summarize
from gn_plugin.metrics.base import higher_is_better
from gn_plugin.training.ema import EMA_HORIZONS, ema_horizon, ema_lags

LABELS = {
    "fid": "FID", "kid": "KID", "is": "IS", "precision": "precision", "recall": "recall",
    "density": "density", "coverage": "coverage", "class_coverage": "class coverage",
}
METRIC_SPACES = {
    "digits": "features of the shipped digits classifier (64-d penultimate layer)",
    "inception": "TF-Inception features (clean-fid)",
}
STAGES = ("best", "final", "equal_time")
STAGE_LABELS = {"best": "best", "final": "final", "equal_time": "best within T"}
GENERATOR_LABELS = {"ema": "EMA", "raw": "raw"}
CSV_COMPARISON_COLUMNS = ["metric", "generator", "stage", *COMPARISON_COLUMNS]
SUMMARY_COLUMNS = ["method", "generator", "stage", "metric", "n", "mean", "median", "std", "ci_low", "ci_high", "ci_method"]
ALPHA = 0.05  # two-sided; family-wise over the pairs of one metric, generator and stage (Holm)
POWER = 0.8
ONE_FACTOR_NOTE = " (`compare: one_factor`: only pairs that differ in the method or in one grid key are compared)"
LISTED_UNDECIDED = 10  # a summary line names at most this many inconclusive pairs (the tables name all)


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
            "best": best_record(records, key) or records[-1],
            "final": records[-1],
            "equal_time": best_record(within, key) or (within[-1] if within else None),
        }
        for stage, record in picked.items():
            row[f"{stage}_step"] = record["step"] if record else None
            row.update({f"{stage}_{m}": record.get(m) if record else None for m in metrics})
        rows.append(row)
    return rows


def values_by_method(rows: Iterable[dict[str, Any]], generator: str, column: str) -> dict[str, list[float]]:
    """Per method (first-seen order): the finished runs' values of ``column`` for ``generator``.

    Works on the rows as built and as read back from ``results.csv`` (strings, empty for none).
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["method"], [])
        if row["generator"] == generator and row["status"] == "finished" and row.get(column) not in (None, ""):
            values[row["method"]].append(float(row[column]))
    return values


# -- statistics over seeds --------------------------------------------------------------------------
def summaries(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """``summary.csv``: n, mean, median, std and the bootstrap CI of the mean per method, generator, stage and metric."""
    result = []
    for generator in dict.fromkeys(r["generator"] for r in rows):
        for stage in STAGES:
            for metric in metrics:
                for method, values in values_by_method(rows, generator, f"{stage}_{metric}").items():
                    if values:
                        summary = asdict(summarize(values))
                        result.append({"method": method, "generator": generator, "stage": stage, "metric": metric, **summary})
    return result


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
    rows: list[dict[str, Any]], metrics: Sequence[str], pairs: Sequence[tuple[str, str]] | None = None
) -> list[dict[str, Any]]:
    """``comparisons.csv`` rows (:data:`CSV_COMPARISON_COLUMNS`) plus ``seeds_needed`` for the page.

    Each metric, generator and stage is one family: every pair of methods with values (or those of
    ``pairs``), Holm-adjusted over the family. ``seeds_needed`` is the noncentral-t sample size per
    method at which the observed difference and pooled spread would reach ``POWER`` at
    alpha / (pairs in the family), the level of Holm's strictest step.
    """
    result = []
    for metric in metrics:
        for generator in dict.fromkeys(r["generator"] for r in rows):
            for stage in STAGES:
                groups = {m: v for m, v in values_by_method(rows, generator, f"{stage}_{metric}").items() if v}
                present = None if pairs is None else [(a, b) for a, b in pairs if a in groups and b in groups]
                if len(groups) < 2 or present == []:
                    continue
                family = compare_all(
                    groups, lower_is_better=not higher_is_better(metric), alpha=ALPHA, pairs=present
                )
                for c in family:
                    needed = seeds_needed(groups[c.method_a], groups[c.method_b], alpha=ALPHA / len(family), power=POWER)
                    result.append({"metric": metric, "generator": generator, "stage": stage, **c.as_row(), "seeds_needed": needed})
    return result


def floor_summary(floor: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The summary of the floor's draws of ``metric`` (mean and bootstrap CI of the mean over the draws)."""
    values = [d[metric] for d in floor["draws"] if d.get(metric) is not None]
    return asdict(summarize(values)) if values else None


@dataclass
class BenchReport:
    """Everything a benchmark report shows, computed once from the cells and their floors."""

    spec: BenchSpec
    cells: list[Cell]
    rows: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    floors: list[dict[str, Any]]
    time_limit_s: float | None


def build_report(spec: BenchSpec, cells: list[Cell], floors: dict[str, dict[str, Any]]) -> BenchReport:
    """Rows, statistics and comparisons of a benchmark's cells."""
    limit = time_limit(cells)
    rows = [row for cell in cells for row in run_rows(cell, spec.metrics, limit)]
    used = [floors[k] for k in dict.fromkeys(floor_key(c.config) for c in cells if c.finished) if k in floors]
    found = comparisons(rows, spec.metrics, compared_pairs(cells, spec.compare))
    return BenchReport(spec, cells, rows, summaries(rows, spec.metrics), found, used, limit)


# -- text ------------------------------------------------------------------------------------------
def number(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits (trailing zeros kept), no exponent for ordinary magnitudes."""
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.{digits}g}".rstrip(".")


def p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def stat(mean: float | None, std: float | None) -> str:
    """``mean ± std`` (the std to two significant digits), or the mean alone."""
    return number(mean) if std is None or mean is None else f"{number(mean)} ± {number(std, 2)}"


def interval(summary: dict[str, Any] | None) -> str:
    """``mean [low, high]`` of a summary; the mean alone without a CI."""
    if summary is None:
        return "–"
    if summary["ci_low"] is None:
        return number(summary["mean"])
    return f"{number(summary['mean'])} [{number(summary['ci_low'])}, {number(summary['ci_high'])}]"


def spread(summary: dict[str, Any] | None) -> str:
    """``median / std`` of a summary."""
    return "–" if summary is None else f"{number(summary['median'])} / {number(summary['std'], 2)}"


def arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def seeds_text(rows: list[dict[str, Any]], method: str, generator: str) -> str:
    mine = [r for r in rows if r["method"] == method and r["generator"] == generator]
    done = sum(r["status"] == "finished" for r in mine)
    return f"{done}" if done == len(mine) else f"{done} of {len(mine)}"


def metric_table(report: BenchReport, metric: str) -> str:
    """Per generator and method: mean [95 % CI], median / std at each stage; then the floors."""
    heading = [f"{STAGE_LABELS[s]}: mean [95 % CI] | median / std" for s in STAGES]
    lines = [
        f"| generator | method | seeds | {' | '.join(heading)} |",
        "|---|---|---|" + "---|---|" * len(STAGES),
    ]
    found = {(s["method"], s["generator"], s["stage"]): s for s in report.summaries if s["metric"] == metric}
    for generator in dict.fromkeys(r["generator"] for r in report.rows):
        for method in dict.fromkeys(r["method"] for r in report.rows):
            cells = []
            for stage in STAGES:
                summary = found.get((method, generator, stage))
                cells += [interval(summary), spread(summary)]
            lines.append(f"| {GENERATOR_LABELS[generator]} | {method} | {seeds_text(report.rows, method, generator)} | " + " | ".join(cells) + " |")
    for floor in report.floors:
        summary = floor_summary(floor, metric)
        if summary is not None:
            cells = [interval(summary), spread(summary)] * len(STAGES)
            lines.append(f"| – | *floor: {floor['label']}* | {summary['n']} draws | " + " | ".join(cells) + " |")
        held_out = floor.get("held_out")
        if held_out and metric in held_out["metrics"]:
            value = number(held_out["metrics"][metric])
            lines.append(f"| – | *{held_out['label']}* | – | " + " | ".join([value, "–"] * len(STAGES)) + " |")
    return "\n".join(lines)


def needed_text(comparison: dict[str, Any]) -> str:
    """Roughly how many seeds per method an inconclusive comparison would need, in words."""
    needed = comparison["seeds_needed"]
    if min(comparison["n_a"], comparison["n_b"]) < 2:
        return "one seed: no spread to test"
    if comparison["diff"] == 0:
        return "equal means"
    if needed is None:
        return "more than 10,000 seeds"
    return f"≈ {needed} seeds" if needed < 100 else f"≈ {float(f'{needed:.2g}'):,.0f} seeds"


def verdict_text(comparison: dict[str, Any]) -> str:
    """The verdict in words; an inconclusive one says how many seeds would decide it."""
    if comparison["verdict"] != "inconclusive":
        return f"**{comparison['verdict']}**"
    return f"inconclusive ({needed_text(comparison)})"


def decided_text(comparison: dict[str, Any]) -> str:
    """``winner better than loser (Holm p …)`` for a decided comparison."""
    a, b = comparison["method_a"], comparison["method_b"]
    winner, loser = (a, b) if comparison["verdict"] == f"{a} better" else (b, a)
    return f"{winner} better than {loser} (Holm p {p_text(comparison['p_holm'])})"


def pair(comparison: dict[str, Any]) -> str:
    return f"{comparison['method_a']} vs {comparison['method_b']}"


def verdict_table(report: BenchReport, generator: str, stage: str) -> str:
    """Pairs × metrics: the verdict of every comparison of one generator and stage."""
    family = [c for c in report.comparisons if c["generator"] == generator and c["stage"] == stage]
    metrics = [m for m in report.spec.metrics if any(c["metric"] == m for c in family)]
    if not metrics:
        return ""
    lines = [
        "| pair | " + " | ".join(f"{label(m)} {arrow(m)}" for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for name in dict.fromkeys(pair(c) for c in family):
        verdicts = {c["metric"]: verdict_text(c) for c in family if pair(c) == name}
        lines.append(f"| {name} | " + " | ".join(verdicts.get(m, "–") for m in metrics) + " |")
    return "\n".join(lines)


def detail_table(report: BenchReport, metric: str, generator: str) -> str:
    """Every comparison of ``metric`` for ``generator``: difference with its CI, p-values, P(A better), verdict."""
    lines = [
        "| stage | A vs B | mean A | mean B | A − B [95 % CI] | Welch p | Holm p | P(A better) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.comparisons:
        if c["metric"] == metric and c["generator"] == generator:
            difference = number(c["diff"]) + ("" if c["ci_low"] is None else f" [{number(c['ci_low'])}, {number(c['ci_high'])}]")
            lines.append(
                f"| {STAGE_LABELS[c['stage']]} | {pair(c)} | {number(c['mean_a'])} | {number(c['mean_b'])} | {difference} | "
                f"{p_text(c['p_value'])} | {p_text(c['p_holm'])} | {c['prob_improvement']:.2f} | {verdict_text(c)} |"
            )
    return "\n".join(lines)


def speed_table(report: BenchReport) -> str:
    """Per method: wall time, train speed and the wall time at its last evaluation (mean ± std over seeds)."""
    lines = [
        "| method | seeds | wall time (s) | train steps/s | wall time at the last evaluation (s) |",
        "|---|---|---|---|---|",
    ]
    last = {}
    for cell in report.cells:
        records = evaluations(cell, cell.config.eval.best_generator) if cell.finished else []
        if records and records[-1].get("wall_time_s") is not None:
            last.setdefault(cell.group, []).append(records[-1]["wall_time_s"])
    chosen = report.cells[0].config.eval.best_generator
    for method in dict.fromkeys(r["method"] for r in report.rows):
        own = [r for r in report.rows if r["method"] == method and r["generator"] == chosen and r["status"] == "finished"]
        cells = [mean_std([r["wall_time_s"] for r in own]), mean_std([r["steps_per_s"] for r in own]), mean_std(last.get(method, []))]
        lines.append(f"| {method} | {seeds_text(report.rows, method, chosen)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    return stat(statistics.mean(present), statistics.stdev(present) if len(present) > 1 else None)


def ema_warnings(cells: Sequence[Cell]) -> list[str]:
    """A warning for each distinct run length shorter than ``EMA_HORIZONS`` EMA horizons (1 / (1 − decay) steps)."""
    warnings = []
    for steps, decay, start in sorted({(c.config.train.steps, c.config.train.ema.decay, c.config.train.ema.start) for c in cells}):
        horizon = ema_horizon(decay)
        averaged = max(steps - start, 0)
        if ema_lags(steps, EmaConfig(decay=decay, start=start)):
            warnings.append(
                f"> **Warning:** runs of {steps} steps average the EMA generator over {averaged} steps, "
                f"{averaged / horizon:.1f} EMA horizons (1 / (1 − {decay:g}) = {horizon:.0f} steps); below "
                f"{EMA_HORIZONS} horizons the EMA still carries the early generators, so its numbers lag the raw ones."
            )
    return warnings


def closing_notes(report: BenchReport) -> str:
    """What is decided for the headline metric and generator, at each stage; how many comparisons overall."""
    options = report.cells[0].config.eval
    metric, generator = options.best_metric, options.best_generator
    lines = []
    for stage in STAGES:
        family = [c for c in report.comparisons if (c["metric"], c["generator"], c["stage"]) == (metric, generator, stage)]
        if not family:
            continue
        decided = [c for c in family if c["verdict"] != "inconclusive"]
        what = f"{label(metric)} of the {GENERATOR_LABELS[generator]} generator, {STAGE_LABELS[stage]}"
        if stage == "equal_time" and report.time_limit_s is not None:
            what += f" (T = {report.time_limit_s:.0f} s)"
        text = "; ".join(decided_text(c) for c in decided)
        undecided = [c for c in family if c["verdict"] == "inconclusive"]
        if len(undecided) <= LISTED_UNDECIDED:
            rest = "; ".join(f"{pair(c)} ({needed_text(c)})" for c in undecided)
        else:
            rest = f"the other {len(undecided)} pairs (the tables below give the seeds each would need)"
        lines.append(
            f"- **{what}**: {len(decided)} of {len(family)} pairs decided"
            + (f": {text}." if decided else ".")
            + (f" Inconclusive: {rest}." if undecided else "")
        )
    total = len(report.comparisons)
    if total:
        decided = sum(c["verdict"] != "inconclusive" for c in report.comparisons)
        lines.append(
            f"- Over all {len(report.spec.metrics)} metrics, both generators and every stage, {decided} of {total} "
            "comparisons are decided (tables below)."
        )
    for floor in report.floors:
        summary = floor_summary(floor, metric)
        best = [s["mean"] for s in report.summaries if (s["metric"], s["generator"], s["stage"]) == (metric, generator, "best")]
        if summary is not None and best and summary["mean"] > 0:
            leader = (max if higher_is_better(metric) else min)(best)
            lines.append(
                f"- Floor ({floor['label']}): {label(metric)} {interval(summary)}; the best method's "
                f"mean best {label(metric)} is {number(leader / summary['mean'])}× that."
            )
    return "\n".join(lines)


def table_notes(report: BenchReport, jobs: int | None) -> str:
    """How the numbers were obtained, as a bullet list."""
    cells, options = report.cells, report.cells[0].config.eval
    steps = sorted({c.config.train.steps for c in cells})
    floors = report.floors
    space = METRIC_SPACES.get(floors[0]["space"], floors[0]["space"]) if floors else "the data set's metric space"
    parallel = f"{jobs} runs in parallel" if jobs else "runs in parallel as recorded below"
    methods = {s["ci_method"] for s in report.summaries if s["ci_method"]}
    lines = [
        (
            f"- Stages, per generator: *best* = the evaluation with the {'highest' if higher_is_better(options.best_metric) else 'lowest'} "
            f"{label(options.best_metric)} (for the {options.best_generator.upper()} generator, the checkpoint `best.pt` keeps, "
            f"as the paper reports); *final* = the last evaluation (step {', '.join(map(str, steps))}); *best within T* = the "
            f"best evaluation whose wall time is at most T"
            + (f" = {report.time_limit_s:.0f} s" if report.time_limit_s is not None else " (no wall times on record)")
            + ", the wall time the fastest method's slowest seed took to its last evaluation: the comparison at equal compute. "
            "Unlike best and final, it rests on measured wall times, so it moves with the machine and its load: "
            "a rerun reproduces the other stages exactly but not this one. "
            f"Evaluated every {options.every or 'end of the'} generator steps."
        ),
        (
            f"- Metrics: {options.num_samples} generated images against the train-split reference, in {space}. "
            "KID is the unbiased estimator, so it can be slightly negative near zero. Precision and recall use k = 3 "
            "nearest neighbours, density and coverage k = 5."
        ),
        (
            "- Over seeds: mean, median and sample standard deviation; 95 % CI of the mean: bootstrap "
            f"(`scipy.stats.bootstrap`, 10,000 resamples, fixed seed; {' and '.join(sorted(methods)) or 'BCa'} "
            "intervals; BCa falls back to percentile where it is undefined, as when all seeds agree)."
        ),
        (
            f"- Comparisons: A − B is the difference of the means with a 95 % bootstrap CI; Welch's t-test p; Holm-adjusted "
            f"over the pairs of one metric, generator and stage{ONE_FACTOR_NOTE if report.spec.compare == 'one_factor' else ''}; P(A better) = Mann–Whitney U / (n_A · n_B), ties half. "
            f"Verdict: *A better* / *B better* when the Holm p < {ALPHA}, else *inconclusive*, with ≈ the seeds per method "
            f"at which the observed difference and pooled spread would be detected with {POWER:.0%} power at "
            f"α / (pairs in the family) (two-sample t-test, noncentral t)."
        ),
    ]
    for floor in floors:
        lines.append(f"- Floor: {floor['how']}")
    lines.append(
        f"- Wall time: the whole run including evaluations ({parallel}); train steps/s: median over the logging "
        "intervals, so evaluation pauses do not count."
    )
    return "\n".join(lines)


def report_body(report: BenchReport, jobs: int | None) -> str:
    """The summary of decided comparisons, the tables, how they were obtained and the comparisons."""
    options = report.cells[0].config.eval
    parts = ["\n\n".join(ema_warnings(report.cells)), "### Summary\n\n" + closing_notes(report)]
    metrics = report.spec.metrics
    for metric in metrics:
        parts.append(f"### {label(metric)} {arrow(metric)}\n\n{metric_table(report, metric)}")
    parts.append("### Wall time and speed\n\n" + speed_table(report))
    parts.append("### How these numbers were obtained\n\n" + table_notes(report, jobs))
    headline = f"{label(options.best_metric)}, {GENERATOR_LABELS[options.best_generator]} generator"
    parts.append(
        f"### Comparisons: {headline}\n\n{detail_table(report, options.best_metric, options.best_generator)}\n\n"
        "Every other comparison's numbers are in `comparisons.csv`; their verdicts follow."
    )
    verdicts = []
    for generator in dict.fromkeys(r["generator"] for r in report.rows):
        for stage in STAGES:
            table = verdict_table(report, generator, stage)
            if table:
                verdicts.append(f"{GENERATOR_LABELS[generator]} generator, {STAGE_LABELS[stage]}:\n\n{table}")
    if verdicts:
        parts.append("### Comparisons: every metric\n\n" + "\n\n".join(verdicts))
    return "\n\n".join(p for p in parts if p)


# -- files -----------------------------------------------------------------------------------------
def write_csv(rows: list[dict[str, Any]], path: Path, columns: Sequence[str] | None = None) -> None:
    """Rows as CSV; columns are ``columns`` or the union of all rows' keys, in first-seen order. None is empty."""
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def last_jobs(root: Path) -> int | None:
    invocations = read_invocations(root)
    return invocations[-1]["jobs"] if invocations else None
