"""The steps of one training iteration: a D update, a G update, the EMA, and the precision they run in.

Every random draw comes from the global torch RNG (z, labels, flips, augmentations) in a fixed
order, so a resumed CPU run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from gn_plugin.training import distributed
from gn_plugin.training.build import memory_format
from gn_plugin.training.state import Training


@dataclass
class DiscriminatorStep:
    """What one D update leaves: detached losses for logging, and the batches the probes look at."""

    losses: dict[str, Tensor]  # "loss/d", "loss/d_adversarial", "loss/<regularizer>"
    real: Tensor
    fake: Tensor
    real_labels: Tensor | None
    fake_labels: Tensor | None
    real_scores: Tensor  # the norm's scores the loss saw, detached
    fake_scores: Tensor


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
    """A real batch randomly flipped where training flips (``data.hflip``); labels only for a conditional model."""
    if t.hflip:
        global_batch = t.config.train.batch_size_d
        flip = (torch.rand(global_batch, device=t.device) < 0.5)[t.group.shard(global_batch)]
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous(memory_format=memory_format(t.config)), (labels if t.num_classes else None)


def update_discriminator(t: Training, stream_images: Tensor, stream_labels: Tensor) -> DiscriminatorStep:
    """One D update from a stream batch: :func:`discriminator_step`, or its CUDA-graph replay."""
    if t.captured_discriminator_step is None:
        return discriminator_step(t, stream_images, stream_labels)
    return t.captured_discriminator_step(lambda *batch: discriminator_step(t, *batch), stream_images, stream_labels)


def discriminator_step(t: Training, stream_images: Tensor, stream_labels: Tensor) -> DiscriminatorStep:
    """One D update on a real batch from the stream and fresh fakes.

    Its shapes are fixed and it never waits on the device, so it can be captured as a CUDA graph.
    """
    real, real_labels = prepare_real(t, stream_images, stream_labels)
    z, fake_labels = sample_latents(t, t.config.train.batch_size_d)
    with torch.no_grad(), autocast(t):
        fake = t.generator(z, fake_labels).to(real.dtype)  # bf16 out of autocast; D sees float32 images
    # the regularizers' augmented real batches, when they join the pass (see build.fuses_views)
    views = [regularizer.augment(real) for regularizer in t.regularizers.values()] if t.fused_views else []
    # One pass: with per-sample scores, scoring the concatenation equals separate calls.
    labels = None if real_labels is None else torch.cat([real_labels, fake_labels, *[real_labels] * len(views)])
    score = t.discriminator.cheap_discriminator_scores if t.cheap_discriminator_step else t.discriminator
    with autocast(t):
        scores = score(torch.cat([real, fake, *views]), labels)
        real_scores, fake_scores, *view_scores = scores.split([len(real), len(fake), *[len(real)] * len(views)])
        adversarial = t.loss.d_loss(real_scores, fake_scores)
        if t.fused_views:
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
    losses = {"loss/d": total.detach(), "loss/d_adversarial": adversarial.detach()}
    losses.update({f"loss/{name}": value.detach() for name, value in terms.items()})
    return DiscriminatorStep(
        losses, real, fake, real_labels, fake_labels, real_scores.detach(), fake_scores.detach()
    )


def generator_step(t: Training) -> Tensor:
    """One G update against the (frozen) discriminator's scores."""
    z, labels = sample_latents(t, t.config.train.batch_size_g)
    t.discriminator.requires_grad_(False)  # D's parameter gradients are not needed here
    score = t.discriminator.cheap_generator_scores if t.cheap_generator_step else t.discriminator
    with autocast(t):
        fake = t.generator(z, labels)
        loss = t.loss.g_loss(score(fake, labels))
    t.optimizer_g.zero_grad(set_to_none=True)
    loss.backward()
    t.discriminator.requires_grad_(True)
    distributed.average_gradients(t.generator, t.group)
    t.optimizer_g.step()
    return loss.detach()


@torch.no_grad()
def update_ema(t: Training) -> None:
    """EMA of G's whole state, as the release averages its state dict (plain copy before ``ema.start``).

    Floating-point buffers (BatchNorm's running statistics, spectral norm's vectors) are averaged
    like the weights; integer ones (BatchNorm's batch counter) are copied.
    """
    decay = t.config.train.ema.decay if t.step >= t.config.train.ema.start else 0.0
    for ema_param, param in zip(t.generator_ema.parameters(), t.generator.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(t.generator_ema.buffers(), t.generator.buffers()):
        if ema_buffer.is_floating_point():
            ema_buffer.lerp_(buffer, 1.0 - decay)
        else:
            ema_buffer.copy_(buffer)
