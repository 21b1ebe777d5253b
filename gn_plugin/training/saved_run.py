"""Reopening a run directory: its config, generators and files, for ``gnbench eval``, ``sample`` and the Python API."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gn_plugin.config import Config, load_config
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.assets import require
from gn_plugin.evaluation.evaluator import Evaluator, evaluation_sampler
from gn_plugin.training import checkpoint
from gn_plugin.training.build import build_dataset_and_models, build_reference_dataset, required_assets
from gn_plugin.training.ema import ema_note, meaningful_generator
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
    checkpoint: str  # the checkpoint actually read: "best" or "latest"

    def describe(self) -> str:
        """Which checkpoint file the generators come from, and its step."""
        path = self.files.best_checkpoint if self.checkpoint == "best" else self.files.latest_checkpoint
        return f"{path} (step {self.step})"

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation in ``results.jsonl`` (one record per step and generator: its metrics, wall time)."""
        return self.files.read_results()

    def ema_note(self) -> str | None:
        """A line saying that the EMA generator lags the raw one at this step (None when it does not)."""
        return ema_note(self.step, self.config.train.ema)

    def pick_generator(self, name: str) -> tuple[str, nn.Module]:
        """``raw``, ``ema``, or ``auto`` (the one meaningful at this step: raw while the EMA lags) -> (name, G)."""
        if name == "auto":
            name = meaningful_generator(self.step, self.config.train.ema)
        if name not in ("raw", "ema"):
            raise GnPluginError(f"generator must be auto, raw or ema, got {name!r}")
        return name, self.generator if name == "raw" else self.generator_ema


def load_run(
    run_dir: Path, which: str = "latest", overrides: list[str] | None = None, *, evaluation: bool = False
) -> SavedRun:
    """Rebuild the generators of ``run_dir`` from its ``config.yaml`` and checkpoint ``which``.

    ``best`` reads ``latest.pt`` while the run has no ``best.pt`` (no evaluation yet); ``checkpoint``
    of the result says which was read. The data set's files (with ``evaluation``, also the weights
    and statistics evaluation reads) are checked first, every missing one named in one error.
    """
    files = RunFiles(run_dir)
    if not files.config.is_file():
        raise GnPluginError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_config(files.config, overrides)
    if evaluation and not config.eval.metrics:
        raise GnPluginError(f"{run_dir}: eval.metrics is empty; name some, e.g. --set eval.metrics=[fid,kid,is]")
    require(required_assets(config, evaluation=evaluation), f"`gnbench assets {files.config} --fetch` downloads them")
    if which == "best" and not files.best_checkpoint.exists():
        which = "latest"
    path = files.best_checkpoint if which == "best" else files.latest_checkpoint
    device = torch.device("cuda" if torch.cuda.is_available() and config.train.device != "cpu" else "cpu")
    state = checkpoint.load(path, map_location=device)
    dataset, pair = build_dataset_and_models(config)
    generator = pair.generator.to(device)
    generator_ema = copy.deepcopy(generator)
    generator.load_state_dict(state["generator"])
    generator_ema.load_state_dict(state["generator_ema"])
    return SavedRun(config, files, dataset, generator.eval(), generator_ema.eval(), int(state["step"]), device, which)


def evaluate_run(
    run_dir: Path, checkpoint: str = "best", overrides: list[str] | None = None, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Evaluate the raw and EMA generators of a finished (or running) run; appends to ``results.jsonl``.

    Each record names the ``eval.mode`` and ``eval.generator_mode`` it was computed with, since
    ``overrides`` may differ from the ones the run was trained with.
    """
    run = load_run(run_dir, checkpoint, overrides, evaluation=True)
    log(f"evaluating the raw and EMA generators of {run.describe()}")
    if run.ema_note():
        log(f"note: {run.ema_note()}")
    reference = build_reference_dataset(run.config, run.dataset)
    evaluator = Evaluator(run.dataset, run.config.eval, run.device, reference_data=reference, progress=True)
    run.files.open_loggers(run.config, resume_step=None)
    records = []
    for name, generator in (("raw", run.generator), ("ema", run.generator_ema)):
        metrics = evaluator.evaluate(evaluation_sampler(generator, run.config, run.device), label=f"evaluating {name}")
        settings = {"eval_mode": run.config.eval.mode, "generator_mode": run.config.eval.generator_mode}
        records.append({"step": run.step, "generator": name, "checkpoint": run.checkpoint, **settings, **metrics})
        run.files.append_result(records[-1])
    run.files.close()
    return records
