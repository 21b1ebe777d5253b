"""Batched image augmentation on the tensor's own device (consistency regularization).

It draws what the authors' release draws per image through PIL (``RandomHorizontalFlip`` then
``RandomAffine(0, translate=(0.2, 0.2))`` with fill 0), for a whole batch at once; the flip is left
out for data that is not mirror-symmetric.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: the colour of the uncovered border: black in the [-1, 1] image range (the release's PIL fill 0)
BLACK = -1.0


def random_shifts(
    batch: int, size: int, max_translation: float, device: torch.device | str, generator: torch.Generator | None = None
) -> Tensor:
    """Integer shifts round(U(−t·S, t·S)) for ``batch`` images of side ``size`` (torchvision's RandomAffine).

    The largest shifts (±round(t·S)) come up less often than the others, in proportion to how much
    of their rounding interval lies inside [−t·S, t·S].
    """
    limit = max_translation * size
    uniform = torch.rand(batch, device=device, generator=generator) * (2 * limit) - limit
    return torch.round(uniform).to(torch.long)


def flip_and_translate(
    images: Tensor, max_translation: float = 0.2, generator: torch.Generator | None = None, fill: float = BLACK,
    *, flip: bool = True,
) -> Tensor:
    """Random horizontal flip, then a random integer translation of up to ``max_translation`` of the
    image size in each axis (:func:`random_shifts`), the uncovered border filled with ``fill``; one
    draw per sample, computed on ``images.device``.

    ``flip=False`` leaves out the flip (and its draw), for images that are not mirror-symmetric.
    ``generator`` (on the same device) makes the draw reproducible.
    """
    batch, _, height, width = images.shape
    device = images.device
    if flip:
        flipped = torch.rand(batch, device=device, generator=generator) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(3), images)
    shift_x = random_shifts(batch, width, max_translation, device, generator)
    shift_y = random_shifts(batch, height, max_translation, device, generator)
    pad_h, pad_w = math.ceil(max_translation * height), math.ceil(max_translation * width)  # ≥ any |shift|
    if pad_h == 0 and pad_w == 0:
        return images
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), value=fill)
    # Output pixel (i, j) reads padded pixel (i + pad - shift): the content moves by +shift.
    rows = torch.arange(height, device=device)[None, :] + pad_h - shift_y[:, None]
    cols = torch.arange(width, device=device)[None, :] + pad_w - shift_x[:, None]
    index = torch.arange(batch, device=device)[:, None, None]
    moved = padded[index, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return moved.permute(0, 3, 1, 2).contiguous()
