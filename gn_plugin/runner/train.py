"""The training loop: n_dis D steps and one G step per iteration, EMA, logging, evaluation, checkpoints.

Reads top to bottom: :func:`train` sets up a :class:`Training` (the one object passed down), then
loops over generator steps. Every random draw of training comes from the global torch RNG or the
seeded data stream, both saved in checkpoints, so a resumed CPU run repeats an uninterrupted one
exactly. Logging, sampling and evaluation run under a forked RNG and never change training.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.norms.base import raw_scores, unwrap
from gn_plugin.norms.gradnorm import GradNorm
from gn_plugin.regularizers.consistency import ConsistencyRegularizer
from gn_plugin.runner import checkpoint, distributed
from gn_plugin.runner.components import (
    build_dataset_and_models,
    build_loss,
    build_norm,
    build_regularizers,
    describe_models,
)
from gn_plugin.runner.config import Config, save_config
from gn_plugin.runner.cuda_graph import CapturedStep, check_cuda_graph, make_capturable
from gn_plugin.runner.data_stream import BatchStream, decoded_bytes, keeps_on_device
from gn_plugin.runner.discriminator_step import discriminator_scores, use_cheap_discriminator_step
from gn_plugin.runner.evaluate import EVAL_SEED, build_evaluator
from gn_plugin.runner.metrics import higher_is_better
from gn_plugin.runner.generator_step import generator_scores, use_cheap_generator_step
from gn_plugin.runner.run_files import RunFiles
from gn_plugin.runner.sampling import image_grid, latent_sampler


class TrainingDiverged(GnPluginError):
    """A loss became NaN or infinite."""


@dataclass
class Training:
    """Everything one training run holds: the config, models, optimisers, data and progress."""

    config: Config
    files: RunFiles
    group: distributed.ProcessGroup
    device: torch.device
    dataset: ImageDataset
    generator: nn.Module
    generator_ema: nn.Module
    discriminator: nn.Module  # the norm's wrapper; its `.discriminator` is the raw D
    loss: Any
    regularizers: dict[str, Any]
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]
    stream: BatchStream
    cheap_generator_step: bool
    cheap_discriminator_step: bool
    fused_consistency: bool  # every regularizer is CR, and its view joins the D step's one GN pass
    #: one D update from a real batch: :func:`discriminator_step`, or its CUDA-graph replay (train.cuda_graph)
    update_discriminator: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    nonfinite: Tensor | None = None  # device-side flag: no host sync per step

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes


def resolve_device(name: str, group: distributed.ProcessGroup) -> torch.device:
    """``auto`` means this process's GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", group.local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise GnPluginError(f"train.device: unknown device '{name}'") from None


def check_batch_sizes(config: Config, group: distributed.ProcessGroup) -> None:
    for key in ("batch_size_d", "batch_size_g"):
        if getattr(config.train, key) % group.world_size:
            raise GnPluginError(f"train.{key}: {getattr(config.train, key)} does not divide over {group.world_size} processes")


def memory_format(config: Config) -> torch.memory_format:
    """NHWC with ``train.channels_last``, else PyTorch's default NCHW."""
    return torch.channels_last if config.train.channels_last else torch.contiguous_format


def fuses_consistency(config: Config, wrapper: nn.Module, regularizers: dict[str, Any]) -> bool:
    """Whether CR's augmented view can join the D step's one pass without changing a number.

    GN's score is a pure per-sample function, so scoring ``cat([real, fake, aug(real)])`` equals
    separate calls; and with CR as the only regularizer, its augmentation draws the same random
    numbers as in the separate pass (nothing draws between the two places).
    """
    return (
        config.train.fuse_consistency
        and isinstance(wrapper, GradNorm)
        and bool(regularizers)
        and all(isinstance(r, ConsistencyRegularizer) for r in regularizers.values())
    )


def setup(config: Config, files: RunFiles, group: distributed.ProcessGroup) -> Training:
    """Build data, models, norm, loss, regularizers, optimisers and the data stream from ``config``."""
    check_batch_sizes(config, group)
    device = resolve_device(config.train.device, group)
    torch.manual_seed(config.train.seed)
    dataset, pair = build_dataset_and_models(config)
    generator = pair.generator.to(device, memory_format=memory_format(config))
    discriminator = build_norm(config, pair.discriminator).to(device, memory_format=memory_format(config))
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    betas = config.train.betas
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.train.lr_g, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=config.train.lr_d, betas=betas)
    if config.train.cuda_graph:
        check_cuda_graph(device, group.world_size)
        make_capturable(optimizer_d, device)  # before the schedulers read the lr
    schedulers = []
    if config.train.lr_decay == "linear":
        decay = lambda step: 1.0 - step / config.train.steps  # noqa: E731 (per G step, to 0)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (optimizer_g, optimizer_d)]
    on_device = keeps_on_device(config.data.on_device, dataset, device, config.data.on_device_limit_mib)
    stream = BatchStream(
        dataset, config.train.batch_size_d, config.train.seed, device,
        num_workers=config.data.num_workers, shard=group.shard(config.train.batch_size_d), on_device=on_device,
    )
    if group.is_main:
        files.log(f"{config.model.name}: {describe_models(pair)}; norm {config.norm.name}, loss {config.loss.name}")
        files.log(f"data '{config.data.name}': {len(dataset)} images, " + (
            f"held on {device} ({decoded_bytes(dataset) / 2**20:.0f} MiB)" if on_device else "read by a DataLoader"
        ))
    regularizers = build_regularizers(config, discriminator)
    t = Training(
        config=config, files=files, group=group, device=device, dataset=dataset,
        generator=generator, generator_ema=generator_ema, discriminator=discriminator,
        loss=build_loss(config), regularizers=regularizers,
        optimizer_g=optimizer_g, optimizer_d=optimizer_d, schedulers=schedulers, stream=stream,
        cheap_generator_step=use_cheap_generator_step(config, discriminator),
        cheap_discriminator_step=use_cheap_discriminator_step(config, discriminator),
        fused_consistency=fuses_consistency(config, discriminator, regularizers),
    )
    t.update_discriminator = functools.partial(discriminator_step, t)
    if config.train.cuda_graph:
        t.update_discriminator = CapturedStep(t.update_discriminator, device)
    return t


# -- one iteration ---------------------------------------------------------------------------------
@contextlib.contextmanager
def float32_precision(t: Training) -> Iterator[None]:
    """For the block: TF32 CUDA convolutions and matmuls with ``train.precision=tf32``, else IEEE float32.

    (PyTorch's own default lets cuDNN convolutions use TF32; ``fp32`` here means no TF32 anywhere.)
    The flags are process-wide, so they are set per iteration and restored after it.
    """
    if t.device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = t.config.train.precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def autocast(t: Training) -> contextlib.AbstractContextManager:
    """bfloat16 autocast with ``train.precision=bf16`` (GN keeps its norm and division in float32).

    A captured step must not use autocast's cache of cast weights (PyTorch's CUDA-graph rule).
    """
    return torch.autocast(
        t.device.type, dtype=torch.bfloat16, enabled=t.config.train.precision == "bf16",
        cache_enabled=not t.config.train.cuda_graph,
    )


def sample_latents(t: Training, global_batch: int) -> tuple[Tensor, Tensor | None]:
    """Fresh z (and class labels when conditional) for this process's share of a global batch."""
    shard = t.group.shard(global_batch)
    z = torch.randn(global_batch, t.generator.z_dim, device=t.device)[shard]
    labels = torch.randint(t.num_classes, (global_batch,), device=t.device)[shard] if t.num_classes else None
    return z, labels


def prepare_real(t: Training, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
    """A real batch randomly flipped when the config asks for it; labels only for a conditional model."""
    if t.config.data.hflip:
        global_batch = t.config.train.batch_size_d
        flip = (torch.rand(global_batch, device=t.device) < 0.5)[t.group.shard(global_batch)]
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous(memory_format=memory_format(t.config)), (labels if t.num_classes else None)


def discriminator_step(t: Training, stream_images: Tensor, stream_labels: Tensor) -> dict[str, Tensor]:
    """One D update on a real batch from the stream and fresh fakes; returns detached values for logging.

    Its shapes are fixed and it never waits on the device, so it can be captured as a CUDA graph.
    """
    real, real_labels = prepare_real(t, stream_images, stream_labels)
    z, fake_labels = sample_latents(t, t.config.train.batch_size_d)
    with torch.no_grad(), autocast(t):
        fake = t.generator(z, fake_labels).to(real.dtype)  # bf16 out of autocast; D sees float32 images
    # CR's augmented real batches, when they join the pass (see fuses_consistency)
    views = [regularizer.augment(real) for regularizer in t.regularizers.values()] if t.fused_consistency else []
    # One fused pass: every norm here is per sample, so scoring the concatenation equals separate calls.
    labels = None if real_labels is None else torch.cat([real_labels, fake_labels, *[real_labels] * len(views)])
    with autocast(t):
        images = torch.cat([real, fake, *views])
        scores = discriminator_scores(t.discriminator, images, labels, cheap=t.cheap_discriminator_step)
        real_scores, fake_scores, *view_scores = scores.split([len(real), len(fake), *[len(real)] * len(views)])
        adversarial = t.loss.d_loss(real_scores, fake_scores)
        if t.fused_consistency:
            terms = {
                name: regularizer.from_scores(real_scores, augmented_scores)
                for (name, regularizer), augmented_scores in zip(t.regularizers.items(), view_scores)
            }
        else:
            terms = {
                name: regularizer(
                    t.discriminator, real=real, fake=fake, real_labels=real_labels,
                    fake_labels=fake_labels, real_scores=real_scores,
                )
                for name, regularizer in t.regularizers.items()
            }
        total = adversarial + sum(terms.values())
    t.optimizer_d.zero_grad(set_to_none=True)
    total.backward()
    distributed.average_gradients(t.discriminator, t.group)
    t.optimizer_d.step()
    return {
        "loss/d": total.detach(), "loss/d_adversarial": adversarial.detach(),
        **{f"loss/{name}": value.detach() for name, value in terms.items()},
        "_real": real, "_fake": fake, "_real_labels": real_labels, "_fake_labels": fake_labels,
        "_real_scores": real_scores.detach(), "_fake_scores": fake_scores.detach(),
    }


def generator_step(t: Training) -> Tensor:
    """One G update against the (frozen) discriminator's scores."""
    z, labels = sample_latents(t, t.config.train.batch_size_g)
    t.discriminator.requires_grad_(False)  # D's parameter gradients are not needed here
    with autocast(t):
        fake = t.generator(z, labels)
        scores = generator_scores(t.discriminator, fake, labels, cheap=t.cheap_generator_step)
        loss = t.loss.g_loss(scores)
    t.optimizer_g.zero_grad(set_to_none=True)
    loss.backward()
    t.discriminator.requires_grad_(True)
    distributed.average_gradients(t.generator, t.group)
    t.optimizer_g.step()
    return loss.detach()


@torch.no_grad()
def update_ema(t: Training) -> None:
    """EMA of G's weights (plain copy before ``ema.start``); buffers are copied."""
    decay = t.config.train.ema.decay if t.step >= t.config.train.ema.start else 0.0
    for ema_param, param in zip(t.generator_ema.parameters(), t.generator.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(t.generator_ema.buffers(), t.generator.buffers()):
        ema_buffer.copy_(buffer)


def flag_nonfinite(t: Training, *losses: Tensor) -> None:
    bad = torch.stack([~torch.isfinite(loss) for loss in losses]).any()
    t.nonfinite = bad if t.nonfinite is None else t.nonfinite | bad


def check_finite(t: Training) -> None:
    """Stop with a clear message when a loss went NaN/Inf since the last check (one host sync)."""
    if t.nonfinite is not None and bool(t.nonfinite):
        latest = t.files.latest_checkpoint
        kept = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged before step {t.step}: a loss became NaN or infinite; {kept} "
            "(try a lower learning rate or another norm)"
        )


def train_iteration(t: Training) -> tuple[dict[str, Tensor], Tensor]:
    """One generator step of training: n_dis D steps, one G step, the EMA and the lr schedules.

    Returns the last D step's values and the G loss, for logging.
    """
    with float32_precision(t):
        for _ in range(t.config.train.n_dis):
            d_values = t.update_discriminator(*next(t.stream))
        g_loss = generator_step(t)
    flag_nonfinite(t, d_values["loss/d"], g_loss)
    t.step += 1
    update_ema(t)
    for scheduler in t.schedulers:
        scheduler.step()
    return d_values, g_loss


# -- logging, evaluation, checkpoints --------------------------------------------------------------
def input_gradient_norms(module: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """Per-sample ‖∇ₓ module(x)‖₂: an empirical Lipschitz probe."""
    x = x.detach().requires_grad_(True)
    scores = raw_scores(module, x, y)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad.flatten(1).norm(dim=1)


def probe_discriminator(t: Training, values: dict[str, Tensor]) -> dict[str, float]:
    """Raw and normalised score statistics and Lipschitz probes on real, fake and interpolated points.

    D runs in eval mode so the probe never advances SN's power iteration.
    """
    real, fake = values["_real"], values["_fake"]
    labels = values["_real_labels"]
    alpha = torch.rand(len(real), 1, 1, 1, device=t.device)
    points = torch.cat([real, fake, alpha * real + (1 - alpha) * fake])
    point_labels = None if labels is None else torch.cat([labels, values["_fake_labels"], labels])
    t.discriminator.eval()
    try:
        effective = input_gradient_norms(t.discriminator, points, point_labels)
        raw = input_gradient_norms(unwrap(t.discriminator), points, point_labels)
        with torch.no_grad():
            raw_real = raw_scores(unwrap(t.discriminator), real, labels)
            raw_fake = raw_scores(unwrap(t.discriminator), fake, values["_fake_labels"])
    finally:
        t.discriminator.train()
    stats = {
        "lipschitz/grad_norm_mean": effective.mean(), "lipschitz/grad_norm_max": effective.max(),
        "lipschitz/raw_grad_norm_mean": raw.mean(), "lipschitz/raw_grad_norm_max": raw.max(),
        "scores/real_mean": values["_real_scores"].mean(), "scores/real_std": values["_real_scores"].std(),
        "scores/fake_mean": values["_fake_scores"].mean(), "scores/fake_std": values["_fake_scores"].std(),
        "scores_raw/real_mean": raw_real.mean(), "scores_raw/real_std": raw_real.std(),
        "scores_raw/fake_mean": raw_fake.mean(), "scores_raw/fake_std": raw_fake.std(),
    }
    return {name: float(value) for name, value in stats.items()}


def sample_grid(t: Training) -> Tensor:
    """Raw and EMA samples of fixed z side by side, as one image grid in [0, 1]."""
    seed, count = t.config.train.seed + 1, t.config.train.sample_count
    raw = latent_sampler(t.generator, t.device, seed)(count)
    ema = latent_sampler(t.generator_ema, t.device, seed)(count)
    return image_grid(torch.cat([raw, ema]), rows=int(math.sqrt(count)))


def evaluate(t: Training, evaluator) -> list[dict[str, Any]]:
    """Score the raw and the EMA generator; keep ``best.pt`` for ``eval.best_metric`` of ``best_generator``."""
    options = t.config.eval
    records = []
    for name, generator in (("raw", t.generator), ("ema", t.generator_ema)):
        metrics = evaluator.evaluate(latent_sampler(generator, t.device, seed=EVAL_SEED))
        records.append({"step": t.step, "generator": name, **metrics})
        t.files.append_result(records[-1])
    chosen = next(r for r in records if r["generator"] == options.best_generator)
    value = chosen.get(options.best_metric)
    if value is not None and improves(options.best_metric, value, t.best.get("value")):
        t.best = {"metric": options.best_metric, "generator": options.best_generator, "value": value, "step": t.step}
        save_checkpoint(t, t.files.best_checkpoint)
    return records


def improves(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def private_rng(device: torch.device):
    """A context in which random draws leave training's RNG streams (CPU and this GPU) untouched."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(t: Training, path: Path) -> None:
    """Everything needed to resume exactly, written atomically."""
    check_finite(t)  # never overwrite a good checkpoint with a diverged state
    state = {
        "step": t.step,
        "generator": t.generator.state_dict(),
        "generator_ema": t.generator_ema.state_dict(),
        "discriminator": t.discriminator.state_dict(),
        "optimizer_g": t.optimizer_g.state_dict(),
        "optimizer_d": t.optimizer_d.state_dict(),
        "schedulers": [s.state_dict() for s in t.schedulers],
        "rng": rng_state(t.device),
        "data_position": t.stream.position,
        "best": t.best,
    }
    checkpoint.save_atomic(state, path)


def restore(t: Training, path: Path) -> None:
    """Load a checkpoint written by :func:`save_checkpoint` into ``t``."""
    state = checkpoint.load(path, map_location=t.device)
    t.generator.load_state_dict(state["generator"])
    t.generator_ema.load_state_dict(state["generator_ema"])
    t.discriminator.load_state_dict(state["discriminator"])
    t.optimizer_g.load_state_dict(state["optimizer_g"])
    t.optimizer_d.load_state_dict(state["optimizer_d"])
    if t.config.train.cuda_graph:
        make_capturable(t.optimizer_d, t.device)
    for scheduler, saved in zip(t.schedulers, state["schedulers"]):
        scheduler.load_state_dict(saved)
    torch.set_rng_state(state["rng"]["cpu"].cpu())
    if "cuda" in state["rng"] and t.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), t.device)
    t.stream.position = int(state["data_position"])
    t.step = int(state["step"])
    t.best = dict(state["best"])


# -- the loop --------------------------------------------------------------------------------------
def train(config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``config`` in ``run_dir``; returns the run summary."""
    group = distributed.init_from_environment(config.train.device)
    files = RunFiles(Path(run_dir), writer=group.is_main)
    if group.is_main:
        files.prepare(resume=resume)
        save_config(config, files.config)
    t = setup(config, files, group)
    if resume:
        restore(t, files.latest_checkpoint)
        files.drop_after(t.step)
        files.log(f"resumed at step {t.step} from {files.latest_checkpoint}")
    with private_rng(t.device):  # building the feature extractor must not move training's RNG
        evaluator = build_evaluator(config, t.dataset, t.device) if group.is_main else None
    options = config.train
    bar = tqdm(total=options.steps, initial=t.step, disable=not (progress and group.is_main), desc=config.norm.name, unit="step")
    started, last_log, last_log_step = time.perf_counter(), time.perf_counter(), t.step

    while t.step < options.steps:
        d_values, g_loss = train_iteration(t)
        done = t.step == options.steps
        if t.step % options.log_every == 0 or done:
            check_finite(t)
            if group.is_main:
                with private_rng(t.device):
                    scalars = {name: float(v) for name, v in d_values.items() if not name.startswith("_")}
                    scalars.update(probe_discriminator(t, d_values))
                now = time.perf_counter()
                scalars.update({
                    "loss/g": float(g_loss),
                    "lr/d": float(t.optimizer_d.param_groups[0]["lr"]), "lr/g": float(t.optimizer_g.param_groups[0]["lr"]),
                    "speed/steps_per_s": (t.step - last_log_step) / max(now - last_log, 1e-9),
                })
                last_log, last_log_step = now, t.step
                files.add_scalars(t.step, scalars)
                bar.set_postfix(d=f"{scalars['loss/d']:.3f}", g=f"{scalars['loss/g']:.3f}")
        if group.is_main and (t.step % options.sample_every == 0 or done):
            with private_rng(t.device):
                files.add_image(t.step, sample_grid(t))
        if group.is_main and ((config.eval.every and t.step % config.eval.every == 0) or done):
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
