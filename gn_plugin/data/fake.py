"""Dataset ``fake``: random images of any shape, for smoke tests of any model and recipe."""

from __future__ import annotations

import torch

from gn_plugin.data.base import TensorImageDataset


def fake(
    *,
    root: str = "data",
    resolution: int | None = None,
    split: str = "train",
    download: bool = True,
    channels: int = 3,
    size: int = 256,
    num_classes: int = 0,
    seed: int = 0,
) -> TensorImageDataset:
    """Dataset ``fake``: ``size`` uniform random images in [-1, 1] and labels, fixed by ``seed``
    (mirror-symmetric: a mirrored noise image is as likely as the image)."""
    resolution = resolution or 32
    generator = torch.Generator().manual_seed(seed + (split != "train"))
    images = torch.rand(size, channels, resolution, resolution, generator=generator) * 2 - 1
    labels = torch.randint(max(num_classes, 1), (size,), generator=generator)
    return TensorImageDataset(images, labels, name="fake", num_classes=num_classes)
