"""The plots of experiment reports (matplotlib, file-only backend): metric curves and sample panels."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the file-only backend)
from matplotlib import ticker  # noqa: E402

from gn_plugin.evaluation.sampling import image_grid, labelled_grid, latent_sampler, stack_grids
from gn_plugin.experiments.report import BenchReport, floors_of
from gn_plugin.experiments.spec import Cell
from gn_plugin.experiments.tables import GENERATOR_LABELS, LABELS, context_label
from gn_plugin.metrics.base import higher_is_better
from gn_plugin.training.saved_run import load_run


FONT_SIZE = 12  # points; the figure (PANEL_WIDTH per column) is shown at about 0.7x in a docs page's column
PANEL_WIDTH, PANEL_HEIGHT = 4.9, 3.5  # inches at 100 dpi


def curves_by_run(report: BenchReport, generator: str) -> dict[str, list[list[dict[str, Any]]]]:
    """Per method: each run's evaluations of ``generator`` (rows of ``curves.csv``) in step order."""
    runs: dict[str, dict[Any, list[dict[str, Any]]]] = {}
    for row in report.data.curves:
        if row["generator"] == generator:
            runs.setdefault(row["method"], {}).setdefault(row["seed"], []).append(row)
    return {method: [sorted(run, key=lambda r: r["step"]) for run in by_seed.values()] for method, by_seed in runs.items()}


def mean_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[list[float]]]:
    """The steps every run evaluated ``key`` at, and per step the runs' values."""
    steps = sorted(set.intersection(*[{r["step"] for r in run if r.get(key) is not None} for run in runs]))
    return steps, [[next(r[key] for r in run if r["step"] == s) for run in runs] for s in steps]


def draw_floors(axis: plt.Axes, report: BenchReport, metric: str) -> None:
    """The floor (mean over its draws) dashed; the held-out context dotted."""
    for index, floor in enumerate(floors_of(report)):
        draws = [r[metric] for r in floor if r["kind"] == "draw" and r.get(metric) is not None]
        if draws:
            axis.axhline(statistics.mean(draws), color="black", linestyle="--", linewidth=1.2,
                         label=f"floor ({floor[0]['images']} training images)" if not index else None)
        context = next((r for r in floor if r["kind"] != "draw" and r.get(metric) is not None), None)
        if context is not None:
            axis.axhline(context[metric], color="grey", linestyle=":", linewidth=1.2,
                         label=context_label(context) if not index else None)


def log_scale(axis: plt.Axes) -> None:
    """A log y axis labelled with plain numbers (0.5, 1, 2) rather than powers of ten."""
    axis.set_yscale("log")
    axis.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())


def plot_curves(report: BenchReport, path: Path) -> None:
    """Each metric against generator step per method (the primary generator solid with a min–max band over
    seeds, the other dotted), then the primary metric against wall time with T marked; one legend on top."""
    metrics = report.spec.metrics
    metric, chosen, _ = report.primary.family()
    other = "raw" if chosen == "ema" else "ema"
    main, second = curves_by_run(report, chosen), curves_by_run(report, other)
    methods = list(main)
    panels = len(metrics) + 1
    columns = 2 if panels > 1 else 1
    rows = -(-panels // columns)
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1, "legend.fontsize": FONT_SIZE - 1}):
        figure, axes = plt.subplots(rows, columns, figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * rows), squeeze=False)
        for axis in axes.flat[panels:]:
            axis.axis("off")
        palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
        colors = {method: palette(index % palette.N) for index, method in enumerate(methods)}
        for axis, name in zip(axes.flat, metrics):
            for method in methods:
                steps, values = mean_curve(main[method], name)
                if steps:
                    axis.plot(steps, [statistics.mean(v) for v in values], color=colors[method], linewidth=2, label=method)
                    if len(main[method]) > 1:
                        axis.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=colors[method], alpha=0.15)
                if method in second:
                    steps, values = mean_curve(second[method], name)
                    if steps:
                        axis.plot(steps, [statistics.mean(v) for v in values], color=colors[method], linewidth=1.2, linestyle=":")
            draw_floors(axis, report, name)
            if name in ("fid", "kid") and all(v > 0 for line in axis.get_lines() for v in line.get_ydata()):
                log_scale(axis)
            axis.set_title(f"{LABELS.get(name, name)} ({'higher' if higher_is_better(name) else 'lower'} is better)")
            axis.set_xlabel("generator step")
            axis.grid(alpha=0.3)
        timed = axes.flat[len(metrics)]
        for method in methods:
            steps, values = mean_curve(main[method], metric)
            _, times = mean_curve(main[method], "wall_time_s")
            if steps and len(times) == len(steps):
                timed.plot([statistics.mean(t) for t in times], [statistics.mean(v) for v in values], color=colors[method],
                           marker="o", markersize=4, linewidth=2)
        if report.time_limit_s is not None:
            timed.axvline(report.time_limit_s, color="black", linewidth=1.2, label=f"T = {report.time_limit_s:.0f} s")
        if metric == "fid":
            log_scale(timed)
        timed.set_title(f"{LABELS.get(metric, metric)} of the {GENERATOR_LABELS[chosen]} generator against wall time")
        timed.set_xlabel("wall time (s), mean over seeds")
        timed.grid(alpha=0.3)
        handles = {}
        for axis in axes.flat[:panels]:
            for handle, text in zip(*axis.get_legend_handles_labels()):
                handles.setdefault(text, handle)
        figure.suptitle(
            f"mean over seeds; {GENERATOR_LABELS[chosen]} generator solid with a min–max band, {GENERATOR_LABELS[other]} dotted",
            fontsize=FONT_SIZE + 1,
        )
        figure.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(4, len(handles)),
                      bbox_to_anchor=(0.5, 0.0), frameon=False)
        figure.tight_layout()
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)


def plot_samples(cells: list[Cell], path: Path, count: int = 32) -> None:
    """One panel per method: ``count`` samples of the raw generator above as many of the EMA generator (the same
    z), of the first finished seed at its last checkpoint, as training's sample grids show them."""
    shown: dict[str, Cell] = {}
    for cell in cells:
        if cell.finished and cell.group not in shown:
            shown[cell.group] = cell
    panels = []
    for method, cell in shown.items():
        run = load_run(cell.run_dir, "latest")
        lags = " (warming up)" if run.ema_note() else ""
        grids = [
            labelled_grid(image_grid(latent_sampler(generator, run.device, seed=cell.seed + 1, mode=run.config.eval.generator_mode)(count), rows=8), label)
            for label, generator in (("raw", run.generator), (f"EMA{lags}", run.generator_ema))
        ]
        grid = stack_grids(grids).permute(1, 2, 0).numpy()  # small images enlarged
        panels.append((f"{method}\nseed {cell.seed}, step {run.step}", grid))
    columns = min(len(shown), 5)
    rows = -(-len(shown) // columns)
    dpi, (height, width) = 110, panels[0][1].shape[:2]
    # each panel at the grid's own pixel size, so every sample pixel is a sharp block
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * (width / dpi + 0.2), rows * (height / dpi + 0.5)), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, grid) in zip(axes.flat, panels):
        axis.imshow(grid, interpolation="nearest")
        axis.set_title(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
