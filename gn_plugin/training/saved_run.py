"""Reopening a run directory: its config, generators and files, for ``gnbench eval`` and ``sample``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.utils import save_image

from gn_plugin.config import Config, load_config
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.evaluator import Evaluator, evaluation_sampler
from gn_plugin.evaluation.sampling import image_grid, latent_sampler
from gn_plugin.training import checkpoint
from gn_plugin.training.build import build_dataset_and_models
from gn_plugin.training.run_dir import RunFiles


@dataclass
class SavedRun:
    """A run's config, data set and generators as of one checkpoint."""

    config: Config
    files: RunFiles
    dataset: ImageDataset
    generator: nn.Module
    generator_ema: nn.Module
    step: int
    device: torch.device


def load_run(run_dir: Path, which: str = "latest", overrides: list[str] | None = None) -> SavedRun:
    """Rebuild the generators of ``run_dir`` from its ``config.yaml`` and checkpoint ``which``."""
    files = RunFiles(run_dir)
    if not files.config.is_file():
        raise GnPluginError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_config(files.config, overrides)
    path = files.best_checkpoint if which == "best" else files.latest_checkpoint
    if which == "best" and not path.exists():
        path = files.latest_checkpoint  # no evaluation improved yet
    device = torch.device("cuda" if torch.cuda.is_available() and config.train.device != "cpu" else "cpu")
    state = checkpoint.load(path, map_location=device)
    dataset, pair = build_dataset_and_models(config)
    generator = pair.generator.to(device)
    generator_ema = copy.deepcopy(generator)
    generator.load_state_dict(state["generator"])
    generator_ema.load_state_dict(state["generator_ema"])
    return SavedRun(config, files, dataset, generator.eval(), generator_ema.eval(), int(state["step"]), device)


def sample_run(run_dir: Path, checkpoint: str = "latest", out: str | None = None, count: int = 64, use_ema: bool = True) -> Path:
    """Write a grid of ``count`` samples of a run's (EMA) generator; returns the PNG path."""
    run = load_run(run_dir, checkpoint)
    generator = run.generator_ema if use_ema else run.generator
    images = latent_sampler(generator, run.device, seed=run.config.train.seed + 1, mode=run.config.eval.generator_mode)(count)
    path = Path(out) if out else run.files.samples / f"{checkpoint}_{'ema' if use_ema else 'raw'}_step{run.step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(image_grid(images, rows=int(count**0.5)), path)
    return path


def evaluate_run(run_dir: Path, checkpoint: str = "best", overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Evaluate the raw and EMA generators of a finished (or running) run; appends to ``results.jsonl``.

    Each record names the ``eval.mode`` and ``eval.generator_mode`` it was computed with, since
    ``overrides`` may differ from the ones the run was trained with.
    """
    run = load_run(run_dir, checkpoint, overrides)
    evaluator = Evaluator(run.dataset, run.config.eval, run.device)
    records = []
    for name, generator in (("raw", run.generator), ("ema", run.generator_ema)):
        metrics = evaluator.evaluate(evaluation_sampler(generator, run.config, run.device))
        settings = {"eval_mode": run.config.eval.mode, "generator_mode": run.config.eval.generator_mode}
        records.append({"step": run.step, "generator": name, "checkpoint": checkpoint, **settings, **metrics})
        run.files.append_result(records[-1])
    run.files.close()
    return records
