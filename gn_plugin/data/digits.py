"""Dataset ``digits``: scikit-learn's bundled 1,797 real handwritten digits (8×8, 10 classes), no download.

The embedded default data set. A fixed, stratified split keeps 360 images out as the held-out set
(``split="test"``), which gives the digits classifier its accuracy and the metrics their
real-vs-real floor. Digits are not mirror-symmetric (a mirrored 2 is no digit), so neither training
nor GN-CR's augmentation flips them unless told to.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gn_plugin.data.base import TensorImageDataset, resize, to_unit_range
from gn_plugin.errors import GnPluginError

HELD_OUT = 360
SPLIT_SEED = 0


def digits_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 8, 8] in [0, 1], labels [N])`` of one split: ``train``, ``test`` or ``all``."""
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    if split == "all":
        return images, labels
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=HELD_OUT, stratify=labels, random_state=SPLIT_SEED
    )
    if split not in ("train", "test"):
        raise GnPluginError(f"dataset 'digits': unknown split '{split}' (choose train, test or all)")
    index = train_idx if split == "train" else test_idx
    return images[index], labels[index]


def digits(
    *,
    root: str = "data",
    resolution: int | None = None,
    split: str = "train",
    download: bool = True,
    channels: int = 1,
) -> TensorImageDataset:
    """Dataset ``digits``: 8×8 grey digits in [-1, 1], optionally resized and repeated to ``channels``;
    not mirror-symmetric, so never flipped unless a flip is forced."""
    if channels not in (1, 3):
        raise GnPluginError(f"dataset 'digits': channels must be 1 or 3, got {channels}")
    images, labels = digits_arrays(split)
    tensor = torch.from_numpy(images)[:, None]
    if resolution is not None:
        tensor = resize(tensor, resolution).clamp(0, 1)
    tensor = to_unit_range(tensor).repeat(1, channels, 1, 1)
    return TensorImageDataset(
        tensor, torch.from_numpy(labels), name="digits", num_classes=10, metric_space="digits",
        mirror_symmetric=False,
    )
