"""Datasets ``cifar10`` and ``stl10`` through torchvision (downloaded into ``root`` on first use).

CIFAR-10 is the 32 px train set scored against clean-fid's precomputed ``cifar10`` statistics;
STL-10 is the 100k-image ``unlabeled`` split at 48 px, whose reference statistics the runner
computes from the data (clean-fid has none for STL-10). Both declare their files
(``required_files``) from torchvision's own lists: every split's files, since torchvision checks
them all, with torchvision's checksums and download.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets
from torchvision.datasets import VisionDataset

from gn_plugin.data.base import DatasetFiles, ImageDataset, RequiredFile, check_resize_mode, image_to_tensor
from gn_plugin.errors import GnPluginError


class TorchvisionImages(ImageDataset):
    """A torchvision data set of ``(PIL image, label)`` whose items are converted on access."""

    def __init__(
        self,
        images: VisionDataset,
        *,
        name: str,
        resolution: int,
        num_classes: int,
        cleanfid_reference: tuple[str, int, str] | None,
        resize: str = "squash",
    ) -> None:
        self.images = images
        self.name = name
        self.resolution = resolution
        self.resize = check_resize_mode(name, resize)
        self.num_classes = num_classes
        self.cleanfid_reference = cleanfid_reference

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.images[index]
        label = label if self.num_classes else 0  # torchvision marks unlabelled STL-10 images -1
        return image_to_tensor(image, self.resolution, self.resize), torch.tensor(label, dtype=torch.int64)

    def feed_digest(self, digest: Any) -> None:
        """CIFAR-10's and STL-10's pixels as torchvision holds them (one array), else every decoded image."""
        pixels = getattr(self.images, "data", None)
        if isinstance(pixels, np.ndarray):
            digest.update(np.ascontiguousarray(pixels))
        else:
            super().feed_digest(digest)


def _load(name: str, kind: type[VisionDataset], root: str, **options: Any) -> VisionDataset:
    """``kind(root, **options)``, turning a failed download or missing files into a one-line GnPluginError."""
    try:
        return kind(root, **options)
    except (OSError, RuntimeError) as exc:  # urllib/OS errors; torchvision's "not found or corrupted"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise GnPluginError(
            f"dataset '{name}': could not download or find it in {root} ({reason}); "
            f"place the extracted {kind.base_folder}/ there (or, with download on, "
            f"{kind.filename} from {kind.url})"
        ) from None


def _check_split(name: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise GnPluginError(f"dataset '{name}': unknown split '{split}' (choose {', '.join(splits)})")


def torchvision_files(kind: type[VisionDataset], root: str) -> tuple[RequiredFile, ...]:
    """The files torchvision's ``kind`` checks under ``root``, each from its archive ``kind.url``."""
    root = os.path.abspath(os.path.expanduser(root))
    listed = [*kind.train_list, *kind.test_list]
    if hasattr(kind, "meta"):  # CIFAR's label names, checked as well
        listed.append([kind.meta["filename"], kind.meta["md5"]])
    return tuple(
        RequiredFile(
            os.path.join(root, kind.base_folder, name), md5=md5, url=kind.url, url_md5=kind.tgz_md5,
            extract_to=root, place=f"mkdir -p {root} && tar xzf {kind.filename} -C {root}",
        )
        for name, md5 in listed
    )


def cifar10_reference(resolution: int | None, split: str) -> tuple[str, int, str] | None:
    """clean-fid precomputed cifar10 statistics at 32 px for both splits, train and test."""
    return ("cifar10", 32, split) if (resolution or 32) == 32 else None


def cifar10_files(*, root: str = "data", resolution: int | None = None, split: str = "train") -> DatasetFiles:
    """The CIFAR-10 python batches torchvision reads, scored against clean-fid's statistics at 32 px."""
    _check_split("cifar10", split, ("train", "test"))
    return DatasetFiles(torchvision_files(datasets.CIFAR10, root), cleanfid_reference=cifar10_reference(resolution, split))


def stl10_files(*, root: str = "data", resolution: int | None = None, split: str = "unlabeled") -> DatasetFiles:
    """The STL-10 binaries torchvision reads; no clean-fid statistics (computed from the data)."""
    _check_split("stl10", split, datasets.STL10.splits)
    return DatasetFiles(torchvision_files(datasets.STL10, root))


def cifar10(
    *, root: str = "data", resolution: int | None = None, split: str = "train", download: bool = True,
    resize: str = "squash",
) -> TorchvisionImages:
    """Dataset ``cifar10``: the 50k train (or 10k test) images, 10 classes, at 32 px unless resized
    (``resize``: ``squash`` or ``center_crop``; the images are square, so only the filter differs)."""
    _check_split("cifar10", split, ("train", "test"))
    resolution = resolution or 32
    root = os.path.abspath(os.path.expanduser(root))
    images = _load("cifar10", datasets.CIFAR10, root, train=split == "train", download=download)
    return TorchvisionImages(
        images, name="cifar10", resolution=resolution, num_classes=10,
        cleanfid_reference=cifar10_reference(resolution, split), resize=resize,
    )


def stl10(
    *, root: str = "data", resolution: int | None = None, split: str = "unlabeled", download: bool = True,
    resize: str = "squash",
) -> TorchvisionImages:
    """Dataset ``stl10``: the 100k ``unlabeled`` 96 px images resized to 48 px (labelled splits: 10 classes);
    ``resize``: ``squash`` (bilinear, the release) or ``center_crop`` (bicubic)."""
    _check_split("stl10", split, datasets.STL10.splits)
    root = os.path.abspath(os.path.expanduser(root))
    images = _load("stl10", datasets.STL10, root, split=split, download=download)
    return TorchvisionImages(
        images,
        name="stl10",
        resolution=resolution or 48,
        num_classes=0 if "unlabeled" in split else 10,
        cleanfid_reference=None,
        resize=resize,
    )


cifar10.required_files = cifar10_files
stl10.required_files = stl10_files
