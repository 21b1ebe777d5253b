"""Drawing images from a generator with a private RNG, and laying them out as a readable, labelled grid."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
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
