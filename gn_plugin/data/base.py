"""The dataset contract.

A dataset is a factory ``factory(*, root="data", resolution=None, split="train", download=True,
**options) -> ImageDataset``. Items are ``(image, label)``: a float image in ``[-1, 1]``, CHW, and an
int64 label (0 for unlabelled data). Random horizontal flip is *not* applied here: the training loop
applies it batched on the device when the config asks for it.

Attributes the runner reads: ``name``, ``resolution``, ``channels``, ``num_classes`` (0 when
unlabelled), ``metric_space`` (``"inception"`` or ``"digits"``: which feature extractor scores
samples of it), ``cleanfid_reference`` (``(name, resolution, split)`` of clean-fid's precomputed
statistics, or None to compute reference statistics from the data set once and cache them),
``reference_split`` (the split whose images samples are scored against; None, the default: the data
set's own images) and ``mirror_symmetric``.

``mirror_symmetric`` says whether a mirrored image is as likely as the image itself: true for
photographs of faces, scenes and objects (CIFAR-10, STL-10, CelebA-HQ, LSUN), false for digits and
text. It decides whether training flips real images (``data.hflip: auto``) and whether an
augmentation that can mirror (GN-CR's and ``cr``'s, option ``hflip: auto``) mirrors: a flipped
digit is not a digit. It defaults to true (what the GAN literature and the authors' release assume);
a data set of images that are not mirror-symmetric sets it to false.
Small data sets subclass :class:`TensorImageDataset`, whose tensors the runner keeps on the device.
Large ones decode their images lazily, one item at a time, through :func:`image_to_tensor`
(:class:`EncodedImageDataset` for files or encoded bytes); the runner reads them through a
``DataLoader``, or decodes them all once at start-up and keeps them on the device (``data.on_device``).
Those take the option ``resize``: ``squash`` (default, the authors' bilinear ``Resize((S, S))``)
or ``center_crop`` (the centred square, bicubic).

A factory that reads files may carry an attribute ``required_files(*, root, resolution, split,
**options) -> DatasetFiles``, called with the factory's own arguments (without ``download``,
``resize`` and ``mirror_symmetric``, which change no file) and creating nothing: the files it reads (each with its checksum, the download that provides it and
how to place it by hand) and how its samples are scored. ``gnbench assets`` lists and fetches them
and training checks them before its first step. A factory without it reads no file of its own
(``digits``, ``fake``) or lets the user's ``root`` be whatever it is (``folder``, ``lmdb``)::

    def my_set_files(*, root="data", resolution=None, split="train") -> DatasetFiles:
        path = os.path.join(root, "images.npz")
        return DatasetFiles((RequiredFile(path, md5="0123...", url="https://example.org/images.npz"),))

    my_set.required_files = my_set_files
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gn_plugin.errors import GnPluginError


@dataclass(frozen=True)
class RequiredFile:
    """A file a data set reads, and where it comes from.

    ``path``: where the data set looks for it; ``md5``: its checksum (None: presence is enough).
    ``url``: a download that provides it, the file itself or, with ``extract_to``, an archive that
    puts it at ``path`` when extracted into that folder; ``url_md5``: the download's checksum.
    ``place``: how to put it there by hand, one command (default: download ``url`` to ``path``).
    """

    path: str
    md5: str | None = None
    url: str | None = None
    url_md5: str | None = None
    extract_to: str | None = None
    place: str = ""


@dataclass(frozen=True)
class DatasetFiles:
    """What a data set needs from disk, known before it is created (the ``required_files`` hook).

    ``metric_space``, ``cleanfid_reference`` and ``reference_split`` are the attributes the created
    data set will carry, so that the feature extractor and the reference statistics it needs can be
    listed too.
    """

    files: tuple[RequiredFile, ...] = ()
    metric_space: str = "inception"
    cleanfid_reference: tuple[str, int, str] | None = None
    reference_split: str | None = None


class ImageDataset(Dataset):
    """Base class carrying the attributes the runner reads."""

    name: str = "dataset"
    resolution: int = 32
    channels: int = 3
    num_classes: int = 0
    metric_space: str = "inception"
    cleanfid_reference: tuple[str, int, str] | None = None
    reference_split: str | None = None
    mirror_symmetric: bool = True

    def feed_digest(self, digest: Any) -> None:
        """Feed every image to ``digest`` (a :mod:`hashlib` object), which then tells versions of the data apart.

        This default decodes every item; data sets that hold their images encoded or as arrays feed
        those bytes instead, which is far cheaper.
        """
        for index in range(len(self)):
            digest.update(torch.as_tensor(self[index][0]).contiguous().numpy())


class TensorImageDataset(ImageDataset):
    """A data set held as two tensors: ``images`` [N, C, H, W] in [-1, 1] and ``labels`` [N] int64."""

    def __init__(
        self, images: Tensor, labels: Tensor, *, name: str, num_classes: int, metric_space: str = "inception",
        mirror_symmetric: bool = True,
    ) -> None:
        if images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
        self.images = images.float()
        self.labels = labels.long()
        self.name = name
        self.channels = images.shape[1]
        self.resolution = images.shape[2]
        self.num_classes = num_classes
        self.metric_space = metric_space
        self.mirror_symmetric = mirror_symmetric

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def feed_digest(self, digest: Any) -> None:
        digest.update(self.images.contiguous().numpy())


def dataset_tensors(dataset: ImageDataset) -> tuple[Tensor, Tensor]:
    """Every image and label of ``dataset`` as two tensors (a :class:`TensorImageDataset` hands over its own)."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.images, dataset.labels
    batches = list(DataLoader(dataset, batch_size=500, shuffle=False, num_workers=0))
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


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


#: how a data set read from images brings them to ``resolution`` × ``resolution`` (data set option ``resize``)
RESIZE_MODES = ("squash", "center_crop")


def check_resize_mode(name: str, resize: str) -> str:
    """``resize`` when it is one of :data:`RESIZE_MODES`; otherwise a one-line error naming the data set."""
    if resize not in RESIZE_MODES:
        raise GnPluginError(f"dataset '{name}': resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    return resize


def image_to_tensor(image: Image.Image, resolution: int, resize: str = "squash") -> Tensor:
    """``image`` as RGB at ``resolution`` × ``resolution``: CHW in [-1, 1].

    ``squash`` (the authors' release, torchvision's ``Resize((S, S))``): the whole image resized
    bilinearly to the square, so a non-square image is squashed. ``center_crop``: the centred
    square cut out, then resized bicubically.
    """
    image = image.convert("RGB")
    if resize == "center_crop":
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        # crop first: resizing with a box would let the filter reach pixels outside the square
        image = image.crop((left, top, left + side, top + side))
        if side != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    elif image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return to_unit_range(pixels.float() / 255)


def decode_image(
    source: str | os.PathLike[str] | bytes, resolution: int, *, origin: str, resize: str = "squash"
) -> Tensor:
    """Decode an image file (a path, or its encoded bytes) with PIL into :func:`image_to_tensor`.

    An unreadable image is a :class:`GnPluginError` that starts with ``origin`` (which file or key).
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image_to_tensor(image, resolution, resize)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports broken files with all three
        raise GnPluginError(f"{origin}: cannot read image ({type(exc).__name__}: {exc})") from None


def worker_error(error: GnPluginError) -> GnPluginError:
    """``error`` as raised in a ``DataLoader`` worker, back to its own one line.

    PyTorch re-raises a worker's exception in the training process with the worker's traceback
    added to the message; the traceback's last line is the original message.
    """
    lines = str(error).strip().splitlines()
    if len(lines) < 2:
        return error
    return GnPluginError(lines[-1].removeprefix(f"{GnPluginError.__module__}.{GnPluginError.__qualname__}: "))


class EncodedImageDataset(ImageDataset):
    """Unlabelled images kept encoded (files or bytes) and decoded per item by :func:`decode_image`.

    Subclasses implement ``__len__`` and ``encoded(index) -> (source, origin)``. Such a data set is
    one split, ``train``, unless the subclass offers more (``splits``); otherwise point ``root`` at
    another folder or database for held-out images.
    """

    def __init__(
        self, *, name: str, resolution: int, split: str, resize: str = "squash", mirror_symmetric: bool = True,
        splits: tuple[str, ...] = ("train",),
    ) -> None:
        if not isinstance(resolution, int) or resolution < 1:
            raise GnPluginError(
                f"dataset '{name}': resolution must be a positive integer, got {resolution!r}"
            )
        if split not in splits:
            raise GnPluginError(
                f"dataset '{name}' has one split, 'train', not '{split}' "
                "(point root at another location for held-out images)"
                if splits == ("train",) else f"dataset '{name}': unknown split '{split}' (choose {', '.join(splits)})"
            )
        if not isinstance(mirror_symmetric, bool):
            raise GnPluginError(f"dataset '{name}': mirror_symmetric must be true or false, got {mirror_symmetric!r}")
        self.name = name
        self.resolution = resolution
        self.resize = check_resize_mode(name, resize)
        self.mirror_symmetric = mirror_symmetric

    def encoded(self, index: int) -> tuple[str | bytes, str]:
        """The encoded image ``index`` (a path or bytes) and where it comes from, for error messages."""
        raise NotImplementedError

    def feed_digest(self, digest: Any) -> None:
        """The encoded bytes of every image (files are read, not decoded)."""
        for index in range(len(self)):
            source, _ = self.encoded(index)
            if isinstance(source, bytes):
                digest.update(source)
            else:
                with open(source, "rb") as file:
                    for chunk in iter(lambda: file.read(1 << 20), b""):
                        digest.update(chunk)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        source, origin = self.encoded(index)
        image = decode_image(source, self.resolution, origin=f"dataset '{self.name}': {origin}", resize=self.resize)
        return image, torch.zeros((), dtype=torch.int64)
