"""The Markdown of a benchmark report: the primary comparison's headline, the exploratory tables, and
sentences generated from the data (verdicts, trends, the floor), so that no claim is typed by hand.

Every function reads a :class:`~gn_plugin.experiments.report.BenchReport` and nothing else, so a page
rebuilt from its published data is the page that was published.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from gn_plugin.config import EmaConfig

from gn_plugin.experiments.report import (
    ALPHA,
    POWER,
    STAGES,
    BenchReport,
    floor_summary,
    floors_of,
    generators_of,
)
from gn_plugin.experiments.spec import Cell, axis_name, value_label
from gn_plugin.experiments.statistics import EQUIVALENT, INCONCLUSIVE
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
STAGE_LABELS = {"final": "final", "best": "best", "equal_time": "best within T"}
GENERATOR_LABELS = {"ema": "EMA", "raw": "raw"}
GRID_COLUMNS = 4  # metrics per verdict table
ONE_FACTOR_NOTE = " (`compare: one_factor`: only pairs that differ in the method or in one grid key are compared)"


# -- numbers and words -----------------------------------------------------------------------------
def number(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits (trailing zeros kept), no exponent for ordinary magnitudes."""
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.{digits}g}".rstrip(".")


def p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def interval(summary: dict[str, Any] | None) -> str:
    """``mean [low, high]`` of a summary; the mean alone without an interval."""
    if summary is None:
        return "–"
    if summary["ci_low"] is None:
        return number(summary["mean"])
    return bracketed(summary["mean"], summary["ci_low"], summary["ci_high"])


def bracketed(value: float, low: float | None, high: float | None) -> str:
    """``value [low, high]``; a narrow table cell may break it before the bracket, never inside it."""
    if low is None:
        return number(value)
    return f"{number(value)} [{number(low)},\u00a0{number(high)}]"


def arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def names(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


def pair_names(report: BenchReport, comparison: dict[str, Any]) -> tuple[str, str, str]:
    """The pair in words and its two sides, short where the cells differ in one factor: ``gn: elu vs softplus``
    (two activations of gn), ``activation=elu: gn vs sn`` (two methods at one activation)."""
    a, b = comparison["method_a"], comparison["method_b"]
    factors = {cell.group: dict(cell.factors) for cell in report.cells}
    fa, fb = factors.get(a), factors.get(b)
    if not fa or not fb or fa.keys() != fb.keys() or len(fa) < 2:
        return f"{a} vs {b}", a, b
    differ = [key for key in fa if fa[key] != fb[key]]
    if len(differ) != 1:
        return f"{a} vs {b}", a, b

    def text(key: str, value: Any) -> str:
        return str(value) if key == "method" else value_label(value)

    shared = ", ".join(text(k, v) if k == "method" else f"{axis_name(k)}={text(k, v)}" for k, v in fa.items() if k not in differ)
    key = differ[0]
    short_a, short_b = text(key, fa[key]), text(key, fb[key])
    return f"{shared}: {short_a} vs {short_b}", short_a, short_b


def pair(report: BenchReport, comparison: dict[str, Any]) -> str:
    return pair_names(report, comparison)[0]


def winner(report: BenchReport, comparison: dict[str, Any]) -> str:
    """The better side of a decided pair, as :func:`pair_names` names it."""
    _, short_a, short_b = pair_names(report, comparison)
    return short_a if comparison["verdict"] == f"{comparison['method_a']} better" else short_b


def decided(comparison: dict[str, Any]) -> bool:
    return comparison["verdict"] not in (INCONCLUSIVE, EQUIVALENT)


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


def verdict_text(report: BenchReport, comparison: dict[str, Any]) -> str:
    """The verdict in words; an inconclusive one says how many seeds might decide it."""
    if comparison["verdict"] == EQUIVALENT:
        return f"**equivalent** (within ±{comparison['margin']:g})"
    if decided(comparison):
        return f"**{winner(report, comparison)} better**"
    return f"inconclusive ({needed_text(comparison)})"


def short_verdict(report: BenchReport, comparison: dict[str, Any] | None) -> str:
    """A verdict in a grid cell: the better method's name, ``≡`` for equivalent, ``– (n)`` for undecided."""
    if comparison is None:
        return ""
    if comparison["verdict"] == EQUIVALENT:
        return "≡"
    if decided(comparison):
        return f"**{winner(report, comparison)}**"
    needed = comparison["seeds_needed"]
    if needed is None:
        return "–" if comparison["diff"] == 0 or min(comparison["n_a"], comparison["n_b"]) < 2 else "– (> 10,000)"
    return f"– ({needed:,})"


def details(title: str, body: str, kind: str = "note") -> str:
    """A collapsed block (pymdownx.details) holding ``body``."""
    indented = "\n".join(f"    {line}" if line else "" for line in body.splitlines())
    return f'??? {kind} "{title}"\n\n{indented}'


def seeds_text(rows: list[dict[str, Any]], method: str, generator: str) -> str:
    mine = [r for r in rows if r["method"] == method and r["generator"] == generator]
    done = sum(r["status"] == "finished" for r in mine)
    return f"{done}" if done == len(mine) else f"{done} of {len(mine)}"


def methods_of(report: BenchReport) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in report.rows))


def final_steps(report: BenchReport) -> list[int]:
    return sorted({r["final_step"] for r in report.rows if r.get("final_step") is not None})


# -- the primary comparison ------------------------------------------------------------------------
def primary_title(report: BenchReport) -> str:
    primary = report.primary
    steps = final_steps(report)
    at = f" (step {', '.join(map(str, steps))})" if steps else ""
    return (
        f"{label(primary.metric)} {arrow(primary.metric)} of the {GENERATOR_LABELS[primary.generator]} generator "
        f"at the {STAGE_LABELS[primary.stage]} evaluation{at}"
    )


def primary_methods_table(report: BenchReport) -> str:
    """Per method, best first: seeds and mean [95 % CI] of the primary metric; then the floors."""
    metric, generator, stage = report.primary.family()
    rows = []
    for method in methods_of(report):
        summary = report.summary(method, generator, stage, metric)
        rows.append((summary, f"| {method} | {seeds_text(report.rows, method, generator)} | {interval(summary)} |"))
    sign = -1 if higher_is_better(metric) else 1
    rows.sort(key=lambda item: (item[0] is None, sign * item[0]["mean"] if item[0] else 0.0))
    lines = [f"| method | seeds | {label(metric)} {arrow(metric)}: mean [95 % CI] |", "|---|---|---|"]
    lines += [line for _, line in rows]
    for floor in floors_of(report):
        summary = floor_summary(floor, metric)
        if summary is not None:
            lines.append(f"| *floor: {floor[0]['images']} training images* | {summary['n']} draws | {interval(summary)} |")
    return "\n".join(lines)


def primary_pairs_table(report: BenchReport) -> str:
    """One row per pair of the primary family: difference and interval, p-values, verdict."""
    family = report.primary_family
    margin = report.primary.margin
    head = "| pair (A vs B) | A − B [95 % CI] | Welch p | Holm p |" + (" TOST Holm p |" if margin else "") + " verdict |"
    lines = [head, "|---" * (5 + bool(margin)) + "|"]
    for c in family:
        difference = bracketed(c["diff"], c["ci_low"], c["ci_high"])
        tost = f" {p_text(c['tost_p_holm'])} |" if margin else ""
        lines.append(f"| {pair(report, c)} | {difference} | {p_text(c['p_value'])} | {p_text(c['p_holm'])} |{tost} {verdict_text(report, c)} |")
    return "\n".join(lines)


def verdict_sentences(report: BenchReport) -> list[str]:
    """What the primary comparison decides, in words generated from its family."""
    family = report.primary_family
    if not family:
        return ["No pair of methods has two finished seeds each: nothing is decided."]
    won = [c for c in family if decided(c)]
    equivalent = [c for c in family if c["verdict"] == EQUIVALENT]
    open_pairs = [c for c in family if c["verdict"] == INCONCLUSIVE]
    margin = report.primary.margin
    lines = [f"**{len(won)} of {len(family)} pairs decided** (Holm-adjusted Welch p < {ALPHA}, family-wise over the {len(family)} pairs)."]
    if won:
        better: dict[str, list[str]] = {}
        for c in won:
            winner = c["verdict"].removesuffix(" better")
            better.setdefault(winner, []).append(c["method_b"] if winner == c["method_a"] else c["method_a"])
        lines.append("Better: " + "; ".join(f"{w} than {names(losers)}" for w, losers in better.items()) + ".")
    if margin is None:
        lines.append(
            "The spec states no equivalence margin, so no pair is called equivalent: an inconclusive pair is "
            "one these seeds cannot tell apart, not one shown to be equal."
        )
    elif equivalent:
        lines.append(
            f"Equivalent within ±{margin:g} (two one-sided Welch tests, Holm over the {len(family)} pairs): "
            f"{names([pair(report, c) for c in equivalent])}."
        )
    else:
        lines.append(f"No pair is shown equivalent within the spec's margin of ±{margin:g} (TOST, Holm over the pairs).")
    if open_pairs and margin is not None:
        lines.append(
            f"The {len(open_pairs)} inconclusive pair{'s are' if len(open_pairs) > 1 else ' is'} neither shown to differ "
            f"nor shown equivalent within ±{margin:g}."
        )
    return lines


def seeds_sentence(report: BenchReport) -> str | None:
    """What the primary table's seeds needed rests on, when a pair is inconclusive."""
    family = report.primary_family
    open_pairs = [c for c in family if c["verdict"] == INCONCLUSIVE]
    if not open_pairs:
        return None
    seeds = sorted({max(c["n_a"], c["n_b"]) for c in open_pairs})
    return (
        "Seeds needed (≈ n seeds, per method, for an inconclusive pair): the number at which Welch's test at "
        f"α / {len(family)} would detect the observed difference with {POWER * 100:.0f} % power if the observed "
        f"means and spreads were the truth; always more than the {' or '.join(map(str, seeds))} seeds run, "
        "and an order of magnitude, since those means and spreads are themselves uncertain."
    )


def trend_sentence(report: BenchReport) -> str | None:
    """Whether the primary metric was still improving at the last evaluation, per method, from ``curves.csv``."""
    metric, generator, _ = report.primary.family()
    lower = not higher_is_better(metric)
    improving, not_improving = [], []
    steps: set[tuple[int, int]] = set()
    for method in methods_of(report):
        runs: dict[Any, list[dict[str, Any]]] = {}
        for row in report.data.curves:
            if row["method"] == method and row["generator"] == generator and row.get(metric) is not None:
                runs.setdefault(row["seed"], []).append(row)
        pairs = [(run[-2], run[-1]) for run in (sorted(r, key=lambda x: x["step"]) for r in runs.values()) if len(run) >= 2]
        if not pairs:
            continue
        steps |= {(before["step"], last["step"]) for before, last in pairs}
        before = statistics.mean(p[0][metric] for p in pairs)
        last = statistics.mean(p[1][metric] for p in pairs)
        seeds = sum((b[metric] > a[metric]) if lower else (a[metric] > b[metric]) for b, a in pairs)
        text = f"{method} ({number(before)} → {number(last)}, {seeds} of {len(pairs)} seeds)"
        (improving if (last < before if lower else last > before) else not_improving).append(text)
    if not improving and not not_improving:
        return None
    at = "the last two evaluations" if len(steps) > 1 else "step {} and step {}".format(*next(iter(steps)))
    verb = "falling" if lower else "rising"
    parts = []
    if improving:
        parts.append(f"still {verb} for {names(improving)}")
    if not_improving:
        parts.append(f"not {verb} for {names(not_improving)}")
    ending = (
        "; a method still improving at its last evaluation may rank differently with more steps." if improving else "."
    )
    return (
        f"Between {at}, the mean {label(metric)} of the {GENERATOR_LABELS[generator]} generator (the seeds that "
        f"improved in brackets) was "
        + " and ".join(parts) + ending
    )


def floor_sentences(report: BenchReport) -> list[str]:
    """The primary metric's floor against the best method's mean, and the held-out context against the runs."""
    metric, generator, stage = report.primary.family()
    lines = []
    means = {m: s["mean"] for m in methods_of(report) if (s := report.summary(m, generator, stage, metric))}
    for floor in floors_of(report):
        summary = floor_summary(floor, metric)
        if summary is None or not means:
            continue
        leader = (max if higher_is_better(metric) else min)(means, key=means.get)
        line = (
            f"Real training images at the generated sample count score {label(metric)} {interval(summary)} "
            f"(the floor, {summary['n']} draws); the best mean, {leader}'s {number(means[leader])}"
        )
        lines.append(line + (f", is {number(means[leader] / summary['mean'])}× that." if summary["mean"] > 0 else "."))
        context = next((r for r in floor if r["kind"] != "draw" and r.get(metric) is not None), None)
        values = [
            float(r[f"{stage}_{metric}"]) for r in report.rows
            if r["generator"] == generator and r["status"] == "finished" and r.get(f"{stage}_{metric}") is not None
        ]
        if context is not None and values:
            beyond = sum(v > context[metric] if higher_is_better(metric) else v < context[metric] for v in values)
            lines.append(
                f"The {context_label(context)} score {number(context[metric])}; {beyond} of the {len(values)} runs score "
                f"{'above' if higher_is_better(metric) else 'below'} that, which only shows that "
                f"{context['images']} real images carry a larger small-sample bias than {floor[0]['images']} generated ones."
                if beyond else
                f"The {context_label(context)} score {number(context[metric])}; none of the {len(values)} runs does better."
            )
    return lines


def context_label(row: dict[str, Any]) -> str:
    if row["kind"] == "held_out":
        return f"{row['images']} held-out images"
    if row["kind"] == "training":
        return f"{row['images']} distinct training images"
    return f"{row['images']} images of one half of the data against the other half"


def primary_section(report: BenchReport) -> str:
    """The headline: what is compared and how, the per-method table, the pairs table and the generated findings."""
    primary = report.primary
    family = report.primary_family
    scope = ONE_FACTOR_NOTE if report.spec.compare == "one_factor" else ""
    margin = (
        f"; equivalence by two one-sided Welch tests (TOST) against the spec's margin of ±{primary.margin:g}"
        if primary.margin else ""
    )
    intro = (
        f"**{primary_title(report)}**, declared in the spec before the runs. Welch's t-test per pair, "
        f"Holm-adjusted over the {len(family)} pairs compared{scope}{margin}. The final evaluation is fixed in "
        "advance, so nothing is chosen on the evaluations reported."
    )
    notes = [seeds_sentence(report), trend_sentence(report), *floor_sentences(report)]
    parts = [intro, bullets(verdict_sentences(report)), primary_methods_table(report)]
    if family:
        parts.append(primary_pairs_table(report))
    parts.append(bullets([note for note in notes if note]))
    return "\n\n".join(part for part in parts if part)


def bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


# -- the exploratory tables ------------------------------------------------------------------------
def metric_table(report: BenchReport, metric: str, generator: str) -> str:
    """Per method, mean [95 % CI] of ``metric`` for ``generator`` at each stage; then the floors."""
    lines = [
        "| method | seeds | " + " | ".join(STAGE_LABELS[s] for s in STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for method in methods_of(report):
        cells = [interval(report.summary(method, generator, stage, metric)) for stage in STAGES]
        lines.append(f"| {method} | {seeds_text(report.rows, method, generator)} | " + " | ".join(cells) + " |")
    for floor in floors_of(report):
        summary = floor_summary(floor, metric)
        if summary is not None:
            floor_cells = " | ".join([interval(summary)] * len(STAGES))
            lines.append(f"| *floor: {floor[0]['images']} training images* | {summary['n']} draws | {floor_cells} |")
        context = next((r for r in floor if r["kind"] != "draw" and r.get(metric) is not None), None)
        if context is not None:
            lines.append(f"| *{context_label(context)}* | – | " + " | ".join([number(context[metric])] * len(STAGES)) + " |")
    return "\n".join(lines)


def verdict_grid(report: BenchReport, generator: str, stage: str) -> str:
    """Pairs × metrics: the verdict of every comparison of one generator and stage, in short; tables of at
    most ``GRID_COLUMNS`` metrics, so that each fits the page."""
    family = [c for c in report.comparisons if c["generator"] == generator and c["stage"] == stage]
    metrics = [m for m in report.spec.metrics if any(c["metric"] == m for c in family)]
    tables = []
    for start in range(0, len(metrics), GRID_COLUMNS):
        shown = metrics[start:start + GRID_COLUMNS]
        lines = ["| pair | " + " | ".join(label(m) for m in shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for name in dict.fromkeys(pair(report, c) for c in family):
            found = {c["metric"]: c for c in family if pair(report, c) == name}
            lines.append(f"| {name} | " + " | ".join(short_verdict(report, found.get(m)) for m in shown) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def detail_table(report: BenchReport, metric: str, generator: str) -> str:
    """Every comparison of ``metric`` for ``generator`` at every stage: difference, Holm p, P(A better), verdict
    (the unadjusted p-values are in ``comparisons.csv``)."""
    lines = [
        "| stage | pair (A vs B) | A − B [95 % CI] | Holm p | P(A better) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.comparisons:
        if c["metric"] == metric and c["generator"] == generator:
            difference = bracketed(c["diff"], c["ci_low"], c["ci_high"])
            lines.append(
                f"| {STAGE_LABELS[c['stage']]} | {pair(report, c)} | {difference} | {p_text(c['p_holm'])} | "
                f"{c['prob_improvement']:.2f} | {verdict_text(report, c)} |"
            )
    return "\n".join(lines)


def exploratory_section(report: BenchReport) -> str:
    """Every metric, generator and stage, labelled exploratory; long tables collapsed."""
    families = {(c["metric"], c["generator"], c["stage"]) for c in report.comparisons}
    count = sum(decided(c) for c in report.comparisons)
    parts = [
        "!!! warning \"Exploratory\"\n"
        f"    These tables show every metric, both generators and every stage: {len(families)} families of pairs, "
        f"each Holm-adjusted on its own ({count} of {len(report.comparisons)} comparisons decided). Across that many "
        "families some verdicts are wrong by chance, so they suggest what a later spec could declare as its primary "
        "comparison; they decide nothing. *best* and *best within T* are each run's best evaluation, chosen on the "
        "evaluations they report, so they are optimistic."
    ]
    primary, chosen = report.primary.metric, report.primary.generator
    others = [g for g in generators_of(report.rows) if g != chosen]
    title = f"{label(primary)} {arrow(primary)}: mean [95 % CI] per stage"
    parts.append(f"### {title}\n\n{GENERATOR_LABELS[chosen]} generator:\n\n{metric_table(report, primary, chosen)}")
    parts += [details(f"{title}, {GENERATOR_LABELS[g]} generator", metric_table(report, primary, g)) for g in others]
    for metric in report.spec.metrics:
        if metric != primary:
            tables = [f"{GENERATOR_LABELS[g]} generator:\n\n{metric_table(report, metric, g)}" for g in [chosen, *others]]
            parts.append(details(f"{label(metric)} {arrow(metric)}: mean [95 % CI] per generator and stage", "\n\n".join(tables)))
    legend = (
        "A method's name: decided better for that metric, in its direction (Holm p < 0.05 within its family); "
        "≡: shown equivalent; – (n): inconclusive, ≈ n seeds per method would detect the observed difference with "
        f"{POWER * 100:.0f} % power (– alone: no difference, or fewer than two seeds)."
    )
    grids = []
    for generator in generators_of(report.rows):
        for stage in STAGES:
            grid = verdict_grid(report, generator, stage)
            if grid:
                grids.append(details(f"Verdicts: {GENERATOR_LABELS[generator]} generator, {STAGE_LABELS[stage]}", grid))
    if grids:
        parts.append("### Verdicts of every metric\n\n" + legend + "\n\n" + "\n\n".join(grids))
    metric, generator, _ = report.primary.family()
    detail = detail_table(report, metric, generator)
    parts.append(details(f"Every comparison of {label(metric)}, {GENERATOR_LABELS[generator]} generator, at every stage", detail))
    return "\n\n".join(parts)


# -- cost, notes and warnings ----------------------------------------------------------------------
def speed_table(report: BenchReport) -> str:
    """Per method: wall time, train speed and the wall time at its last evaluation (mean ± std over seeds)."""
    lines = [
        "| method | seeds | wall time (s) | train steps/s | wall time at the last evaluation (s) |",
        "|---|---|---|---|---|",
    ]
    chosen = report.cells[0].config.eval.best_generator
    last: dict[str, dict[Any, float]] = {}
    for row in report.data.curves:
        if row["generator"] == chosen and row.get("wall_time_s") is not None:
            last.setdefault(row["method"], {})[row["seed"]] = row["wall_time_s"]  # rows are in step order
    for method in methods_of(report):
        own = [r for r in report.rows if r["method"] == method and r["generator"] == chosen and r["status"] == "finished"]
        cells = [mean_std([r["wall_time_s"] for r in own]), mean_std([r["steps_per_s"] for r in own]),
                 mean_std(list(last.get(method, {}).values()))]
        lines.append(f"| {method} | {seeds_text(report.rows, method, chosen)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    mean, std = statistics.mean(present), statistics.stdev(present) if len(present) > 1 else None
    return number(mean) if std is None else f"{number(mean)} ± {number(std, 2)}"


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


def floor_how(floor: list[dict[str, Any]]) -> str:
    """How a floor was obtained, in words, from its rows."""
    first = floor[0]
    draws = sum(r["kind"] == "draw" for r in floor)
    count, size = first["images"], first["training_images"]
    context = next((r for r in floor if r["kind"] != "draw"), None)
    reference = first.get("reference_images")
    own = "" if reference is not None else " (the reference's own images)"
    text = (
        f"{draws} draws of {count} images, with replacement, from the {size} {first['data']} training images{own}, "
        "each scored against the reference exactly like a generator's samples. A draw with "
        "replacement is an i.i.d. sample of the training distribution, so this is what a generator that reproduces the "
        f"training set exactly scores with {count} samples, the count the generators are scored with (FID and KID are "
        "biased by the sample count, so a floor at another count is no floor). Mean and 95 % t interval over the draws"
    )
    text += f"; {count} distinct real images do not exist here ({size} training)." if count > size else "."
    if context is not None:
        text += f" Beside it, for context: {context_label(context)}, scored against the same reference" + (
            ": fresh images but fewer, so with a larger small-sample bias." if context["kind"] == "held_out" else "."
        )
    if reference is not None:
        text += f" The reference is the data set's {reference} held-out images, which training never sees."
    return text


def sampling_note(cells: Sequence[Cell]) -> str:
    """How G is sampled for evaluation, from the configs."""
    config = cells[0].config
    if config.eval.generator_mode == "train":
        return (
            "G is sampled for evaluation in train mode, as the authors' release does: BatchNorm layers normalise with "
            f"the statistics of each sampling batch of {config.train.batch_size_g} images (`train.batch_size_g`), and "
            "the EMA generator averages BatchNorm's buffers with its weights."
        )
    return "G is sampled for evaluation in eval mode: BatchNorm layers use their running statistics."


def table_notes(report: BenchReport) -> str:
    """How the numbers were obtained, as a bullet list."""
    cells, options = report.cells, report.cells[0].config.eval
    floors = floors_of(report)
    space = METRIC_SPACES.get(floors[0][0]["space"], floors[0][0]["space"]) if floors else "the data set's metric space"
    limit = report.time_limit_s
    jobs = report.data.cost[-1]["jobs"] if report.data.cost else None
    parallel = ("one run at a time" if jobs == 1 else f"{jobs} runs in parallel") if jobs else "runs in parallel as recorded under Cost"
    lines = [
        (
            f"- Stages, per generator: *final* = the last evaluation (step {', '.join(map(str, final_steps(report)))}); "
            f"*best* = the evaluation with the {'highest' if higher_is_better(options.best_metric) else 'lowest'} "
            f"{label(options.best_metric)} (for the {options.best_generator.upper()} generator, the checkpoint `best.pt` "
            "keeps, as the paper reports); *best within T* = the best evaluation whose wall time is at most T"
            + (f" = {limit:.0f} s" if limit is not None else " (no wall times on record)")
            + ", the wall time the fastest method's slowest seed took to its last evaluation: the comparison at equal "
            "compute. *best* and *best within T* pick the best of a run's evaluations and report that same evaluation, "
            "so they are optimistic; the primary comparison uses *final*, chosen before the runs. *best within T* also "
            "rests on measured wall times, so it moves with the machine and its load: a rerun reproduces the other "
            f"stages exactly but not this one. Evaluated every {options.every or 'end of the'} generator steps."
        ),
        (
            f"- Metrics: {options.num_samples} generated images against the train-split reference, in {space}. "
            "KID is the unbiased estimator, so it can be slightly negative near zero. Precision and recall use k = 3 "
            "nearest neighbours, density and coverage k = 5. " + sampling_note(cells)
        ),
        (
            "- Over seeds: mean and 95 % Student's t interval of the mean (`summary.csv` adds the median and the "
            "sample standard deviation)."
        ),
        (
            "- Comparisons: A − B is the difference of the means with Welch's 95 % interval, which excludes 0 exactly "
            "when Welch's t-test gives p < 0.05; Holm-adjusted over the pairs of one metric, generator and stage"
            f"{ONE_FACTOR_NOTE if report.spec.compare == 'one_factor' else ''}. Verdict: *A better* / *B better* when "
            f"the Holm p < {ALPHA}; *equivalent* (primary comparison only, with a margin in the spec) when two one-sided "
            "Welch tests put the difference within ± the margin, Holm-adjusted likewise; else *inconclusive*. "
            f"Seeds needed: the smallest number of seeds per method, more than were run, at which Welch's test at "
            f"α / (pairs in the family) would detect the observed difference with {POWER * 100:.0f} % power if the observed "
            "means and spreads were the truth; both are uncertain with few seeds, so it is an order of magnitude. "
            "P(A better) = Mann–Whitney U / (n_A · n_B), ties half: how often a seed of A beats a seed of B in these "
            "seeds, a description with no interval."
        ),
    ]
    for floor in floors:
        lines.append(f"- Floor: {floor_how(floor)}")
    lines.append(
        f"- Wall time: the whole run including evaluations ({parallel}); train steps/s: median over the logging "
        "intervals, so evaluation pauses do not count."
    )
    return "\n".join(lines)


# -- the body ----------------------------------------------------------------------------------------
def report_body(report: BenchReport) -> str:
    """The primary comparison, the exploratory tables with the speeds, and how the numbers were obtained."""
    warnings = "\n\n".join(ema_warnings(report.cells))
    parts = [
        "## Primary comparison\n\n" + (warnings + "\n\n" if warnings else "") + primary_section(report),
        "## Exploratory results\n\n" + exploratory_section(report),
        details("Wall time and speed per method", speed_table(report)),
        "## How these numbers were obtained\n\n" + table_notes(report),
    ]
    return "\n\n".join(parts)


def paper_table(report: BenchReport) -> str:
    """The spec's published numbers beside the ones measured here (primary generator and stage, mean over seeds)."""
    paper = report.spec.paper
    if paper is None:
        return ""
    _, generator, stage = report.primary.family()
    metrics = " / ".join(label(m) for m in paper.metrics)
    lines = [
        f"| method | the authors ({metrics}) | here: {metrics}, {GENERATOR_LABELS[generator]} generator, {STAGE_LABELS[stage]}, mean |",
        "|---|---|---|",
    ]
    for method, published in paper.values.items():
        here = " / ".join(number(s["mean"]) if (s := report.summary(method, generator, stage, m)) else "–" for m in paper.metrics)
        lines.append(f"| {method} | {published} | {here} |")
    return f"The authors: {paper.source}.\n\n" + "\n".join(lines)
