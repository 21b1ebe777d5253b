"""The plots of experiment reports (matplotlib, file-only backend): metric curves and sample panels."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the file-only backend)

from gn_plugin.evaluation.sampling import image_grid, latent_sampler
from gn_plugin.experiments.report import LABELS, evaluations
from gn_plugin.experiments.spec import Cell
from gn_plugin.metrics.base import higher_is_better
from gn_plugin.training.saved_run import load_run


def plot_curves(cells: list[Cell], floors: list[dict[str, Any]], metrics: Sequence[str], path: Path) -> None:
    """Metric against generator step per method: mean over seeds, min–max band, floor dashed."""
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    groups: dict[str, list[list[dict[str, Any]]]] = {}
    for cell in cells:
        if cell.finished:
            groups.setdefault(cell.group, []).append(evaluations(cell))
    for axis, metric in zip(axes[0], metrics):
        for method, runs in groups.items():
            steps = sorted(set.intersection(*[{r["step"] for r in run if r.get(metric) is not None} for run in runs]))
            if not steps:
                continue
            values = [[next(r[metric] for r in run if r["step"] == s) for s in steps] for run in runs]
            columns = list(zip(*values))
            line = axis.plot(steps, [statistics.mean(c) for c in columns], label=method, linewidth=1.5)[0]
            if len(runs) > 1:
                axis.fill_between(steps, [min(c) for c in columns], [max(c) for c in columns], color=line.get_color(), alpha=0.15)
        for number_, floor in enumerate(floors):
            if metric in floor["metrics"]:
                axis.axhline(floor["metrics"][metric], color="black", linestyle="--", linewidth=1, label="real-vs-real floor" if not number_ else None)
        if metric == "fid":
            axis.set_yscale("log")
        axis.set_title(f"{LABELS.get(metric, metric)} ({'higher' if higher_is_better(metric) else 'lower'} is better)")
        axis.set_xlabel("generator step")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    generator = cells[0].config.eval.best_generator.upper()
    figure.suptitle(f"{generator} generator: mean over seeds, band = min to max", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_samples(cells: list[Cell], path: Path, count: int = 64) -> None:
    """One panel per method: ``count`` samples of the first finished seed's EMA generator at its last checkpoint."""
    shown: dict[str, Cell] = {}
    for cell in cells:
        if cell.finished and cell.group not in shown:
            shown[cell.group] = cell
    panels = []
    for method, cell in shown.items():
        run = load_run(cell.run_dir, "latest")
        images = latent_sampler(run.generator_ema, run.device, seed=cell.seed + 1)(count)
        grid = image_grid(images, rows=int(count**0.5)).permute(1, 2, 0).numpy()  # small images enlarged
        panels.append((f"{method}\nseed {cell.seed}, step {run.step}, EMA", grid))
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


