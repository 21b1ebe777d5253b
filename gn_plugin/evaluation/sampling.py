"""Drawing images from a generator with a private RNG, and laying them out as a grid."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.utils import make_grid


def latent_sampler(generator: nn.Module, device: torch.device | str, seed: int) -> Callable[[int], Tensor]:
    """``sample(n)``: n images from ``generator`` (eval mode), z from an RNG seeded by ``seed``.

    Conditional generators get labels cycling through the classes. The global RNG is untouched.
    """
    rng = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def sample(n: int) -> Tensor:
        z = torch.randn(n, generator.z_dim, device=device, generator=rng)
        labels = torch.arange(n, device=device) % generator.num_classes if generator.num_classes else None
        was_training = generator.training
        generator.eval()
        try:
            return generator(z, labels)
        finally:
            generator.train(was_training)

    return sample


def image_grid(images: Tensor, rows: int) -> Tensor:
    """Images in [-1, 1] as one CHW grid in [0, 1] with ``rows`` images per row."""
    return make_grid(images.float().cpu(), nrow=rows, normalize=True, value_range=(-1, 1), pad_value=1)
