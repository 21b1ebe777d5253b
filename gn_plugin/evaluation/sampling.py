"""Drawing images from a generator with a private RNG, and laying them out as a grid."""

from __future__ import annotations

import copy
from typing import Callable, Literal

import torch
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
    model = copy.deepcopy(generator).train() if mode == "train" else generator
    left_over: list[Tensor] = []

    def generate(count: int) -> Tensor:
        z = torch.randn(count, generator.z_dim, device=device, generator=rng)
        labels = (
            torch.randint(generator.num_classes, (count,), device=device, generator=rng) if generator.num_classes else None
        )
        if mode == "train":
            return model(z, labels)
        was_training = model.training
        model.eval()
        try:
            return model(z, labels)
        finally:
            model.train(was_training)

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


def image_grid(images: Tensor, rows: int) -> Tensor:
    """Images in [-1, 1] as one CHW grid in [0, 1] with ``rows`` images per row."""
    return make_grid(images.float().cpu(), nrow=rows, normalize=True, value_range=(-1, 1), pad_value=1)
