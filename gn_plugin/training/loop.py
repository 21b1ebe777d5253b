"""The training loop: n_dis D steps and one G step per iteration, EMA, logging, evaluation, checkpoints.

Reads top to bottom: :func:`train` takes the run directory's lock, checks what is already there,
builds a :class:`~gn_plugin.training.state.Training` (the one object passed down) and loops over
generator steps; :func:`train_iteration` is one of them (the steps themselves are in
:mod:`gn_plugin.training.steps`); logging, sampling, evaluation and checkpoints follow. Every random
draw of training comes from the global torch RNG or the seeded data stream, both saved in
checkpoints, so a resumed CPU run repeats an uninterrupted one exactly. Logging, sampling and
evaluation run under a forked RNG and never change training. Nothing reads a state that is not
finite: the check comes before every checkpoint, evaluation, sample grid and log line.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from gn_plugin.config import RESUMABLE_KEYS, Config, changed_keys, load_config, resume_conflicts, save_config
from gn_plugin.errors import GnPluginError, Interrupted, first_line
from gn_plugin.evaluation.assets import require
from gn_plugin.evaluation.evaluator import Evaluator, evaluation_sampler
from gn_plugin.evaluation.sampling import image_grid, labelled_grid, latent_sampler, stack_grids
from gn_plugin.metrics.base import higher_is_better
from gn_plugin.models.base import count_parameters
from gn_plugin.training import distributed
from gn_plugin.training.build import build_reference_dataset, describe, required_assets, setup
from gn_plugin.training.checkpoint import restore, save_checkpoint
from gn_plugin.training.ema import ema_note
from gn_plugin.training.probes import probe_discriminator
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.state import Training, check_finite, flag_nonfinite
from gn_plugin.training.stopping import StopRequest, stop_signals
from gn_plugin.training.threads import choose_threads
from gn_plugin.training.steps import (
    DiscriminatorStep,
    float32_precision,
    generator_step,
    update_discriminator,
    update_ema,
)


def train(config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``config`` in ``run_dir``; returns the run summary.

    One process writes a run directory at a time (``.lock``). A new run refuses a directory that
    holds another run; a resumed one refuses a config that changes keys outside
    :data:`~gn_plugin.config.RESUMABLE_KEYS`, before any file is touched, and leaves a finished run
    as it is. SIGINT, SIGTERM or SIGUSR2 writes a checkpoint of the last completed step and raises
    :class:`~gn_plugin.errors.Interrupted`.
    """
    group = distributed.init_from_environment(config.train.device)
    files = RunFiles(Path(run_dir), writer=group.is_main)
    created = group.is_main and not files.root.exists()
    stale_owner = files.lock() if group.is_main else None
    try:
        # several processes would have to agree on the step to stop at: there a signal stops at once
        signals = stop_signals(second_stops_at_once=True) if group.world_size == 1 else contextlib.nullcontext(StopRequest())
        with signals as stop:
            summary = run(config, files, group, resume=resume, progress=progress, stop=stop, stale_owner=stale_owner)
    finally:
        files.close()
        files.unlock()
        if created and files.root.is_dir() and not any(files.root.iterdir()):
            files.root.rmdir()  # a run refused before it wrote anything leaves nothing behind
    distributed.shutdown(group)
    return summary


def run(
    config: Config, files: RunFiles, group: distributed.ProcessGroup, *, resume: bool, progress: bool,
    stop: StopRequest, stale_owner: str | None,
) -> dict[str, Any]:
    """The body of :func:`train`, under the run directory's lock."""
    if group.is_main:
        finished = check_resume(config, files) if resume else check_new_run(config, files)
        if finished is not None:
            print(f"{files.root} finished at step {finished['steps']}; nothing to do (raise train.steps to train longer)")
            return finished
    require(required_assets(config), f"`gnbench assets {files.config} --fetch` downloads them")
    t = setup(config, files, group)
    if resume:
        restore(t, files.latest_checkpoint)
        if t.step > config.train.steps:
            raise GnPluginError(f"train.steps={config.train.steps} is below step {t.step}, where {files.root} stands")
    threads = choose_threads(config.train.threads, t.device, count_parameters(t.generator) + count_parameters(t.discriminator))
    if group.is_main:
        open_files(t, resume=resume, stale_owner=stale_owner)
        files.log(threads.describe())
        note = ema_note(config.train.steps, config.train.ema)
        if note:
            files.log(f"note: train.steps={config.train.steps} is short for the EMA: {note}")
    try:
        return train_steps(t, progress=progress, stop=stop)
    except RuntimeError as exc:
        if not (isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)):
            raise
        raise GnPluginError(
            f"out of memory at step {t.step + 1} on {t.device}: {first_line(exc)} "
            "(lower train.batch_size_d, train.batch_size_g, eval.batch_size or model.width)"
        ) from None


def train_steps(t: Training, *, progress: bool, stop: StopRequest) -> dict[str, Any]:
    """Train from ``t.step`` to ``train.steps``: the loop itself; returns the summary."""
    config, options, group, files = t.config, t.config.train, t.group, t.files
    evaluates = group.is_main and bool(config.eval.metrics)  # eval.metrics: [] trains without evaluating
    with private_rng(t.device):  # building the feature extractor must not move training's RNG
        evaluator = Evaluator(
            t.dataset, config.eval, t.device, reference_data=build_reference_dataset(config, t.dataset), progress=progress
        ) if evaluates else None
    bar = tqdm(total=options.steps, initial=t.step, disable=not (progress and group.is_main), desc=config.norm.name, unit="step")
    started = time.perf_counter()
    wall_time = lambda: t.wall_time_s + time.perf_counter() - started  # noqa: E731 (every segment of the run)
    speed, speed_between_evaluations = SpeedMeter(t.step), SpeedMeter(t.step)

    while t.step < options.steps:
        if stop.signum is not None:
            interrupt(t, stop, wall_time())
        d_step, g_loss = train_iteration(t)
        done = t.step == options.steps
        log_due = t.step % options.log_every == 0 or done
        sample_due = group.is_main and (t.step % options.sample_every == 0 or done)
        eval_due = group.is_main and ((config.eval.every and t.step % config.eval.every == 0) or done)
        checkpoint_due = group.is_main and (t.step % options.checkpoint_every == 0 or done)
        if log_due or sample_due or eval_due or checkpoint_due:
            check_finite(t)  # nothing below reads a diverged state
        if log_due and group.is_main:
            scalars = log_scalars(t, d_step, g_loss, speed)
            bar.set_postfix(d=f"{scalars['loss/d']:.3f}", g=f"{scalars['loss/g']:.3f}")
        if sample_due:
            with private_rng(t.device):
                files.add_image(t.step, sample_grid(t))
        if eval_due and evaluates:
            timing = {"wall_time_s": wall_time(), "train_steps_per_s": speed_between_evaluations.read(t.step)}
            with private_rng(t.device):
                records = evaluate(t, evaluator, timing)
            speed_between_evaluations.pause()
            metric = config.eval.best_metric
            shown = {r["generator"]: r.get(metric) for r in records}
            bar.write(f"step {t.step}: {metric} raw {shown['raw']:.3f}, ema {shown['ema']:.3f}")
        if checkpoint_due:
            save_checkpoint(t, files.latest_checkpoint, wall_time())
        bar.update(1)

    bar.close()
    summary = {
        "steps": t.step, "wall_time_s": wall_time(), "best": t.best,
        "cheap_generator_step": t.cheap_generator_step, "cheap_discriminator_step": t.cheap_discriminator_step,
        "world_size": group.world_size,
    }
    files.write_summary(summary)
    return summary


# -- what is already in the run directory ------------------------------------------------------------
def check_new_run(config: Config, files: RunFiles) -> None:
    """Refuse to start over a run: a directory with a checkpoint, results or another config.

    A directory holding only the start of this same run (killed before its first checkpoint) is
    started again.
    """
    root = files.root
    if files.latest_checkpoint.exists() or files.results.exists() or files.summary.exists():
        raise GnPluginError(f"run directory {root} already holds a run; pass --resume or choose another --out")
    if files.config.is_file():
        differing = resume_conflicts(load_config(files.config), config)
        if differing:
            raise GnPluginError(
                f"run directory {root} holds the start of another run (its config.yaml differs in "
                f"{', '.join(differing)}); choose another --out"
            )
    elif files.holds_run():
        raise GnPluginError(f"run directory {root} holds files of another run but no config.yaml; choose another --out")


def check_resume(config: Config, files: RunFiles) -> dict[str, Any] | None:
    """Refuse a resume that would change the run; returns the summary of a run that is already finished.

    Only :data:`~gn_plugin.config.RESUMABLE_KEYS` may differ from the run's ``config.yaml``.
    """
    if not files.config.is_file():
        raise GnPluginError(f"--resume: {files.root} is not a run directory (no config.yaml)")
    saved = load_config(files.config)
    refused = resume_conflicts(saved, config)
    if refused:
        raise GnPluginError(
            f"--resume: {', '.join(refused)} cannot change on resume (only {', '.join(RESUMABLE_KEYS)} can); "
            "start a new run with another --out"
        )
    if "train.steps" in changed_keys(saved, config) and config.train.lr_decay == "linear":
        raise GnPluginError("--resume: train.steps cannot change with train.lr_decay=linear (the decay ends at the last step)")
    if not files.latest_checkpoint.is_file():
        raise GnPluginError(f"--resume: no checkpoint at {files.latest_checkpoint}")
    summary = files.read_summary()
    if summary is None or config.train.steps > summary.get("steps", 0):
        return None
    if config.train.steps < summary.get("steps", 0):
        raise GnPluginError(f"train.steps={config.train.steps} is below step {summary['steps']}, where {files.root} finished")
    return summary


def open_files(t: Training, *, resume: bool, stale_owner: str | None) -> None:
    """Make the run directory match the state ``t`` starts from, then write its config and log lines.

    Temporary files of interrupted writes go, records after ``t.step`` (and torn lines) are dropped,
    and a finished run that trains further loses its summary until it finishes again.
    """
    files = t.files
    notes = [f"took over the lock of a process that is gone ({stale_owner})"] if stale_owner else []
    removed = files.remove_temporary_files()
    if removed:
        notes.append(f"removed {len(removed)} temporary file(s) of interrupted writes: {', '.join(p.name for p in removed)}")
    notes += files.drop_after(t.step)
    files.summary.unlink(missing_ok=True)
    files.create()
    save_config(t.config, files.config)
    for line in describe(t) + ([f"resumed at step {t.step} from {files.latest_checkpoint}"] if resume else []) + notes:
        files.log(line)
    files.open_loggers(t.config, resume_step=t.step)


# -- stopping on a signal ----------------------------------------------------------------------------
def interrupt(t: Training, stop: StopRequest, wall_time_s: float) -> None:
    """Checkpoint the last completed step (unless ``latest.pt`` holds it already) and raise :class:`Interrupted`."""
    files, name, signum = t.files, stop.name, stop.signum
    if t.group.is_main and t.step > 0 and t.checkpoint_step != t.step:
        save_checkpoint(t, files.latest_checkpoint, wall_time_s)
    if t.checkpoint_step is None:
        raise Interrupted(f"stopped by {name} before the first step; nothing to resume", signum)
    raise Interrupted(
        f"stopped by {name} at step {t.step}, saved in {files.latest_checkpoint}; "
        f"continue with: gnbench train {files.root} --resume", signum,
    )


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

    def pause(self) -> None:
        """Leave the time since the last reading (an evaluation, say) out of the next reading."""
        self.time = time.perf_counter()


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
    seed, count, mode = t.config.train.seed + 1, t.config.train.sample_count, t.config.eval.generator_mode
    rows = int(math.sqrt(count))
    return stack_grids([
        labelled_grid(image_grid(latent_sampler(generator, t.device, seed, mode=mode)(count), rows), f"{name}, step {t.step}")
        for name, generator in (("raw", t.generator), ("EMA", t.generator_ema))
    ])


def evaluate(t: Training, evaluator: Evaluator, timing: dict[str, float]) -> list[dict[str, Any]]:
    """Score the raw and the EMA generator; keep ``best.pt`` for ``eval.best_metric`` of ``best_generator``.

    ``timing`` (wall time so far over every segment of the run, train steps/s since the last
    evaluation) goes into both records.
    """
    options = t.config.eval
    records = []
    for name, generator in (("raw", t.generator), ("ema", t.generator_ema)):
        metrics = evaluator.evaluate(evaluation_sampler(generator, t.config, t.device), label=f"evaluating {name}")
        records.append({"step": t.step, "generator": name, **timing, **metrics})
        t.files.append_result(records[-1])
    chosen = next(r for r in records if r["generator"] == options.best_generator)
    value = chosen.get(options.best_metric)
    if value is not None and improves(options.best_metric, value, t.best.get("value")):
        t.best = {"metric": options.best_metric, "generator": options.best_generator, "value": value, "step": t.step}
        save_checkpoint(t, t.files.best_checkpoint, timing["wall_time_s"])
    return records


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (None: nothing to beat yet)."""
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def private_rng(device: torch.device):
    """A context in which random draws leave training's RNG streams (CPU and this GPU) untouched."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
