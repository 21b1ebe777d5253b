"""The dataset contract.

A dataset is a factory ``factory(*, root="data", resolution=None, split="train", download=True,
**options) -> ImageDataset``. Items are ``(image, label)``: a float image in ``[-1, 1]``, CHW, and an
int64 label (0 for unlabelled data). Random horizontal flip is *not* applied here: the training loop
applies it batched on the device when the config asks for it.

Attributes the runner reads: ``name``, ``resolution``, ``channels``, ``num_classes`` (0 when
unlabelled), ``metric_space`` (``"inception"`` or ``"digits"``: which feature extractor scores
samples of it) and ``cleanfid_reference`` (``(name, resolution, split)`` of clean-fid's precomputed
statistics, or None to compute reference statistics from the data set once and cache them).
Small data sets subclass :class:`TensorImageDataset`, whose tensors the runner keeps on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Base class carrying the attributes the runner reads."""

    name: str = "dataset"
    resolution: int = 32
    channels: int = 3
    num_classes: int = 0
    metric_space: str = "inception"
    cleanfid_reference: tuple[str, int, str] | None = None


class TensorImageDataset(ImageDataset):
    """A data set held as two tensors: ``images`` [N, C, H, W] in [-1, 1] and ``labels`` [N] int64."""

    def __init__(self, images: Tensor, labels: Tensor, *, name: str, num_classes: int, metric_space: str = "inception") -> None:
        if images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
        self.images = images.float()
        self.labels = labels.long()
        self.name = name
        self.channels = images.shape[1]
        self.resolution = images.shape[2]
        self.num_classes = num_classes
        self.metric_space = metric_space

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def to_unit_range(images: Tensor) -> Tensor:
    """Map images from [0, 1] to [-1, 1]."""
    return images * 2 - 1


def resize(images: Tensor, resolution: int) -> Tensor:
    """Bilinear (antialiased) resize of a batch [N, C, H, W] to ``resolution`` × ``resolution``."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return torch.nn.functional.interpolate(
        images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
    )
