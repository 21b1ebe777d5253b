"""The plots of experiment reports (matplotlib, file-only backend): metric curves and sample panels."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the file-only backend)

from gn_plugin.evaluation.sampling import image_grid, labelled_grid, latent_sampler, stack_grids
from gn_plugin.experiments.report import LABELS, BenchReport, evaluations
from gn_plugin.experiments.spec import Cell
from gn_plugin.metrics.base import higher_is_better
from gn_plugin.training.saved_run import load_run


def mean_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[list[float]]]:
    """The steps every run evaluated ``key`` at, and per step the runs' values."""
    steps = sorted(set.intersection(*[{r["step"] for r in run if r.get(key) is not None} for run in runs]))
    return steps, [[next(r[key] for r in run if r["step"] == s) for run in runs] for s in steps]


def draw_floors(axis: plt.Axes, floors: list[dict[str, Any]], metric: str) -> None:
    """The floor (mean over its draws) dashed; the held-out context dotted."""
    for index, floor in enumerate(floors):
        draws = [d[metric] for d in floor["draws"] if metric in d]
        if draws:
            axis.axhline(statistics.mean(draws), color="black", linestyle="--", linewidth=1,
                         label=f"floor ({floor['label']})" if not index else None)
        held_out = floor.get("held_out") or {}
        if metric in held_out.get("metrics", {}):
            axis.axhline(held_out["metrics"][metric], color="grey", linestyle=":", linewidth=1,
                         label=held_out["label"] if not index else None)


def plot_curves(report: BenchReport, path: Path) -> None:
    """Each metric against generator step per method (EMA solid with a min–max band over seeds, raw dotted),
    then the headline metric against wall time with T marked."""
    metrics = report.spec.metrics
    options = report.cells[0].config.eval
    runs: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
    for cell in report.cells:
        if cell.finished:
            for generator in ("ema", "raw"):
                runs.setdefault(cell.group, {}).setdefault(generator, []).append(evaluations(cell, generator))
    panels = len(metrics) + 1
    columns = min(panels, 4)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    for axis in axes.flat[panels:]:
        axis.axis("off")
    colors = {method: f"C{index}" for index, method in enumerate(runs)}
    for axis, metric in zip(axes.flat, metrics):
        for method, by_generator in runs.items():
            steps, values = mean_curve(by_generator["ema"], metric)
            if steps:
                axis.plot(steps, [statistics.mean(v) for v in values], color=colors[method], linewidth=1.5, label=method)
                if len(by_generator["ema"]) > 1:
                    axis.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=colors[method], alpha=0.15)
            steps, values = mean_curve(by_generator["raw"], metric)
            if steps:
                axis.plot(steps, [statistics.mean(v) for v in values], color=colors[method], linewidth=1, linestyle=":")
        draw_floors(axis, report.floors, metric)
        if metric in ("fid", "kid") and all(v > 0 for line in axis.get_lines() for v in line.get_ydata()):
            axis.set_yscale("log")
        axis.set_title(f"{LABELS.get(metric, metric)} ({'higher' if higher_is_better(metric) else 'lower'} is better)")
        axis.set_xlabel("generator step")
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    timed = axes.flat[len(metrics)]
    key, chosen = options.best_metric, options.best_generator
    for method, by_generator in runs.items():
        steps, values = mean_curve(by_generator[chosen], key)
        _, times = mean_curve(by_generator[chosen], "wall_time_s")
        if steps and len(times) == len(steps):
            timed.plot([statistics.mean(t) for t in times], [statistics.mean(v) for v in values], color=colors[method],
                       marker="o", markersize=3, linewidth=1.5, label=method)
    if report.time_limit_s is not None:
        timed.axvline(report.time_limit_s, color="black", linewidth=1, label=f"T = {report.time_limit_s:.0f} s")
    if key == "fid":
        timed.set_yscale("log")
    timed.set_title(f"{LABELS.get(key, key)} of {chosen.upper()} against wall time")
    timed.set_xlabel("wall time (s), mean over seeds")
    timed.grid(alpha=0.3)
    timed.legend(fontsize=7)
    figure.suptitle("mean over seeds; EMA generator solid with a min–max band, raw dotted", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
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
