"""Drawing images from a generator with a private RNG, and laying them out as a readable, labelled grid."""

from __future__ import annotations

import copy
from typing import Callable, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torchvision.utils import make_grid

#: how a generator is run for sampling (``eval.generator_mode``)
GeneratorMode = Literal["train", "eval"]
GENERATOR_MODES: tuple[str, ...] = ("train", "eval")


def latent_sampler(
    generator: nn.Module,
    device: torch.device | str,
    seed: int,
    *,
    mode: GeneratorMode = "train",
    batch_size: int | None = None,
) -> Callable[[int], Tensor]:
    """``sample(n)``: n images from ``generator`` under no_grad, z (and labels) from an RNG seeded by ``seed``.

    ``mode="train"`` runs a copy of the generator in train mode, as the authors' release samples:
    BatchNorm normalises with the statistics of each sampling batch and spectral norm runs its power
    iteration, on the copy only. ``mode="eval"`` runs the generator itself in eval mode (BatchNorm's
    running statistics, spectral norm's stored vectors). Either way the generator's own parameters,
    buffers and mode are left as they were, and the global RNG is untouched.

    ``batch_size``: images per generator call, so that in train mode the batch statistics come from
    batches of that size (the release: ``batch_size_G``); ``sample(n)`` then serves its images from
    whole batches, keeping the rest for the next call. None: one call of ``n`` per ``sample(n)``.
    Labels of a conditional generator are drawn uniformly at random from the same RNG.
    """
    rng = torch.Generator(device=device).manual_seed(seed)
    model = sampling_model(generator, mode)
    left_over: list[Tensor] = []

    def generate(count: int) -> Tensor:
        z = torch.randn(count, generator.z_dim, device=device, generator=rng)
        labels = (
            torch.randint(generator.num_classes, (count,), device=device, generator=rng) if generator.num_classes else None
        )
        return forward(model, z, labels, mode)

    @torch.no_grad()
    def sample(n: int) -> Tensor:
        if batch_size is None:
            return generate(n)
        while sum(len(images) for images in left_over) < n:
            left_over.append(generate(batch_size))
        images = torch.cat(left_over)
        left_over[:] = [images[n:]]
        return images[:n]

    return sample


def sampling_model(generator: nn.Module, mode: GeneratorMode) -> nn.Module:
    """What runs for sampling: a train-mode copy in ``train`` mode (the original's buffers stay as they are),
    the generator itself in ``eval`` mode."""
    return copy.deepcopy(generator).train() if mode == "train" else generator


def forward(model: nn.Module, z: Tensor, labels: Tensor | None, mode: GeneratorMode) -> Tensor:
    """``model(z, labels)``, in eval mode for ``mode="eval"`` (its own mode restored afterwards)."""
    if mode == "train":
        return model(z, labels)
    was_training = model.training
    model.eval()
    try:
        return model(z, labels)
    finally:
        model.train(was_training)


@torch.no_grad()
def generate(
    generator: nn.Module,
    z: Tensor,
    labels: Tensor | None = None,
    *,
    mode: GeneratorMode = "train",
    fill_to: int | None = None,
    fill_seed: int = 0,
) -> Tensor:
    """Images of ``generator`` at the given ``z`` [N, z_dim] (and ``labels`` [N] for a conditional one).

    In train mode BatchNorm normalises with the statistics of the batch, so a few related z (an
    interpolation, one z per class) would normalise each other: with ``fill_to`` the batch is filled up
    to that many images with random z (and labels) from an RNG seeded by ``fill_seed``, whose images are
    dropped. The generator's parameters, buffers and mode are left as they were, the global RNG untouched.
    """
    extra = max(0, (fill_to or 0) - len(z)) if mode == "train" else 0
    if extra:
        rng = torch.Generator(device=z.device).manual_seed(fill_seed)
        z = torch.cat([z, torch.randn(extra, z.shape[1], device=z.device, generator=rng)])
        if labels is not None:
            labels = torch.cat([labels, torch.randint(generator.num_classes, (extra,), device=z.device, generator=rng)])
    return forward(sampling_model(generator, mode), z, labels, mode)[: len(z) - extra]


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation from ``z0`` to ``z1`` [z_dim] at the fractions ``t`` [T]: [T, z_dim].

    Gaussian z in d dimensions lie near the sphere of radius √d; a straight line between two of them
    passes through norms near √(d/2) in the middle, where G was never trained. The great circle keeps
    the norm (linearly interpolated between the two ends) and so stays where the training z were.
    """
    t = t.to(z0.dtype).unsqueeze(1)
    norm0, norm1 = z0.norm(), z1.norm()
    cos = torch.clamp(torch.dot(z0 / norm0, z1 / norm1), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:  # (nearly) the same direction: the line is the circle
        return torch.lerp(z0.unsqueeze(0), z1.unsqueeze(0), t)
    direction = (torch.sin((1 - t) * omega) * z0 / norm0 + torch.sin(t * omega) * z1 / norm1) / torch.sin(omega)
    return direction * torch.lerp(norm0, norm1, t)


def image_grid(images: Tensor, rows: int, *, min_size: int = 64) -> Tensor:
    """Images in [-1, 1] as one RGB CHW grid in [0, 1] with ``rows`` images per row.

    Images smaller than ``min_size`` pixels are enlarged by a whole factor (nearest neighbour, every
    pixel a sharp block), so that 8×8 digits or 32×32 CIFAR images are readable at 1:1.
    """
    factor = -(-min_size // max(images.shape[-2:]))
    if factor > 1:
        images = nn.functional.interpolate(images.float(), scale_factor=factor, mode="nearest")
    return make_grid(images.float().cpu(), nrow=rows, normalize=True, value_range=(-1, 1), pad_value=1)


def labelled_grid(grid: Tensor, label: str, *, font_size: int = 14) -> Tensor:
    """``grid`` (RGB CHW in [0, 1]) under a white strip with ``label`` written on it, widened to fit the label."""
    font = ImageFont.load_default(size=font_size)
    left, top, right, bottom = font.getbbox(label)
    width, height = max(grid.shape[2], right + 8), bottom + 8
    strip = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(strip).text((4, 4 - top // 2), label, fill="black", font=font)
    text = torch.from_numpy(np.array(strip)).permute(2, 0, 1).float() / 255
    body = nn.functional.pad(grid, (0, width - grid.shape[2]), value=1.0)
    return torch.cat([text, body], dim=1)


def stack_grids(grids: list[Tensor]) -> Tensor:
    """Labelled grids (RGB CHW) one above the other, narrower ones padded white on the right."""
    width = max(grid.shape[2] for grid in grids)
    return torch.cat([nn.functional.pad(grid, (0, width - grid.shape[2]), value=1.0) for grid in grids], dim=1)
