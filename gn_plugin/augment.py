"""Batched image augmentation on the tensor's own device (consistency regularization)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def flip_and_translate(
    images: Tensor, max_translation: float = 0.2, generator: torch.Generator | None = None
) -> Tensor:
    """Random horizontal flip, then a random integer translation of up to ``max_translation`` of the
    image size in each axis with zero fill; one draw per sample, computed on ``images.device``.

    ``generator`` (on the same device) makes the draw reproducible.
    """
    batch, _, height, width = images.shape
    device = images.device
    flip = torch.rand(batch, device=device, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(3), images)
    pad_h, pad_w = int(round(max_translation * height)), int(round(max_translation * width))
    if pad_h == 0 and pad_w == 0:
        return images
    shift_y = torch.randint(-pad_h, pad_h + 1, (batch,), device=device, generator=generator)
    shift_x = torch.randint(-pad_w, pad_w + 1, (batch,), device=device, generator=generator)
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h))
    # Output pixel (i, j) reads padded pixel (i + pad - shift): the content moves by +shift.
    rows = torch.arange(height, device=device)[None, :] + pad_h - shift_y[:, None]
    cols = torch.arange(width, device=device)[None, :] + pad_w - shift_x[:, None]
    index = torch.arange(batch, device=device)[:, None, None]
    moved = padded[index, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return moved.permute(0, 3, 1, 2).contiguous()
