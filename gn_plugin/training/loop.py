"""The training loop: n_dis D steps and one G step per iteration, EMA, logging, evaluation, checkpoints.

Reads top to bottom: :func:`train` builds a :class:`~gn_plugin.training.state.Training` (the one
object passed down) and loops over generator steps; :func:`train_iteration` is one of them (the
steps themselves are in :mod:`gn_plugin.training.steps`); logging, sampling, evaluation and
checkpoints follow. Every random draw of training comes from the global torch RNG or the seeded data
stream, both saved in checkpoints, so a resumed CPU run repeats an uninterrupted one exactly.
Logging, sampling and evaluation run under a forked RNG and never change training.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from gn_plugin.config import Config, save_config
from gn_plugin.evaluation.assets import require
from gn_plugin.evaluation.evaluator import EVAL_SEED, Evaluator
from gn_plugin.evaluation.sampling import image_grid, labelled_grid, latent_sampler
from gn_plugin.metrics.base import higher_is_better
from gn_plugin.training import distributed
from gn_plugin.training.build import required_assets, setup
from gn_plugin.training.checkpoint import restore, save_checkpoint
from gn_plugin.training.probes import probe_discriminator
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.state import Training, check_finite, flag_nonfinite
from gn_plugin.training.steps import (
    DiscriminatorStep,
    float32_precision,
    generator_step,
    update_discriminator,
    update_ema,
)


def train(config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``config`` in ``run_dir``; returns the run summary."""
    group = distributed.init_from_environment(config.train.device)
    files = RunFiles(Path(run_dir), writer=group.is_main)
    if group.is_main:
        files.prepare(resume=resume)
        save_config(config, files.config)
    require(required_assets(config), f"`gnbench assets {files.config} --fetch` downloads them")
    t = setup(config, files, group)
    if resume:
        restore(t, files.latest_checkpoint)
        files.drop_after(t.step)
        files.log(f"resumed at step {t.step} from {files.latest_checkpoint}")
    evaluates = group.is_main and bool(config.eval.metrics)  # eval.metrics: [] trains without evaluating
    with private_rng(t.device):  # building the feature extractor must not move training's RNG
        evaluator = Evaluator(t.dataset, config.eval, t.device, progress=progress) if evaluates else None
    options = config.train
    bar = tqdm(total=options.steps, initial=t.step, disable=not (progress and group.is_main), desc=config.norm.name, unit="step")
    started = time.perf_counter()
    speed = SpeedMeter(t.step)

    while t.step < options.steps:
        d_step, g_loss = train_iteration(t)
        done = t.step == options.steps
        if t.step % options.log_every == 0 or done:
            check_finite(t)
            if group.is_main:
                scalars = log_scalars(t, d_step, g_loss, speed)
                bar.set_postfix(d=f"{scalars['loss/d']:.3f}", g=f"{scalars['loss/g']:.3f}")
        if group.is_main and (t.step % options.sample_every == 0 or done):
            with private_rng(t.device):
                files.add_image(t.step, sample_grid(t))
        if evaluates and ((config.eval.every and t.step % config.eval.every == 0) or done):
            with private_rng(t.device):
                records = evaluate(t, evaluator)
            metric = config.eval.best_metric
            shown = {r["generator"]: r.get(metric) for r in records}
            bar.write(f"step {t.step}: {metric} raw {shown['raw']:.3f}, ema {shown['ema']:.3f}")
        if group.is_main and (t.step % options.checkpoint_every == 0 or done):
            save_checkpoint(t, files.latest_checkpoint)
        bar.update(1)

    bar.close()
    summary = {
        "steps": t.step, "wall_time_s": time.perf_counter() - started, "best": t.best,
        "cheap_generator_step": t.cheap_generator_step, "cheap_discriminator_step": t.cheap_discriminator_step,
        "world_size": group.world_size,
    }
    if group.is_main:
        files.write_summary(summary)
        files.close()
    distributed.shutdown(group)
    return summary


# -- one iteration ---------------------------------------------------------------------------------
def train_iteration(t: Training) -> tuple[DiscriminatorStep, Tensor]:
    """One generator step of training: n_dis D steps, one G step, the EMA and the lr schedules.

    Returns the last D step and the G loss, for logging.
    """
    with float32_precision(t):
        for _ in range(t.config.train.n_dis):
            d_step = update_discriminator(t, *next(t.stream))
        g_loss = generator_step(t)
    flag_nonfinite(t, d_step.losses["loss/d"], g_loss)
    t.step += 1
    update_ema(t)
    for scheduler in t.schedulers:
        scheduler.step()
    return d_step, g_loss


# -- logging, evaluation -----------------------------------------------------------------------------
class SpeedMeter:
    """Generator steps per second since the previous reading."""

    def __init__(self, step: int) -> None:
        self.time, self.step = time.perf_counter(), step

    def read(self, step: int) -> float:
        now = time.perf_counter()
        speed = (step - self.step) / max(now - self.time, 1e-9)
        self.time, self.step = now, step
        return speed


def log_scalars(t: Training, d_step: DiscriminatorStep, g_loss: Tensor, speed: SpeedMeter) -> dict[str, float]:
    """Losses, probes, learning rates and speed to TensorBoard and ``scalars.jsonl``; returns them."""
    with private_rng(t.device):
        scalars = {name: float(value) for name, value in d_step.losses.items()}
        scalars.update(probe_discriminator(t, d_step))
    scalars.update({
        "loss/g": float(g_loss),
        "lr/d": float(t.optimizer_d.param_groups[0]["lr"]), "lr/g": float(t.optimizer_g.param_groups[0]["lr"]),
        "speed/steps_per_s": speed.read(t.step),
    })
    t.files.add_scalars(t.step, scalars)
    return scalars


def sample_grid(t: Training) -> Tensor:
    """Raw samples above EMA samples of the same fixed z, each grid labelled with its generator and step."""
    seed, count = t.config.train.seed + 1, t.config.train.sample_count
    rows = int(math.sqrt(count))
    grids = [
        labelled_grid(image_grid(latent_sampler(generator, t.device, seed)(count), rows), f"{name}, step {t.step}")
        for name, generator in (("raw", t.generator), ("EMA", t.generator_ema))
    ]
    width = max(grid.shape[2] for grid in grids)
    return torch.cat([torch.nn.functional.pad(grid, (0, width - grid.shape[2]), value=1.0) for grid in grids], dim=1)


def evaluate(t: Training, evaluator: Evaluator) -> list[dict[str, Any]]:
    """Score the raw and the EMA generator; keep ``best.pt`` for ``eval.best_metric`` of ``best_generator``."""
    options = t.config.eval
    records = []
    for name, generator in (("raw", t.generator), ("ema", t.generator_ema)):
        metrics = evaluator.evaluate(latent_sampler(generator, t.device, seed=EVAL_SEED), label=f"evaluating {name}")
        records.append({"step": t.step, "generator": name, **metrics})
        t.files.append_result(records[-1])
    chosen = next(r for r in records if r["generator"] == options.best_generator)
    value = chosen.get(options.best_metric)
    if value is not None and improves(options.best_metric, value, t.best.get("value")):
        t.best = {"metric": options.best_metric, "generator": options.best_generator, "value": value, "step": t.step}
        save_checkpoint(t, t.files.best_checkpoint)
    return records


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (None: nothing to beat yet)."""
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def private_rng(device: torch.device):
    """A context in which random draws leave training's RNG streams (CPU and this GPU) untouched."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
