"""Dataset ``folder``: every image under a directory (e.g. CelebA-HQ), unlabelled, decoded lazily.

With ``held_out: N`` the last N images in file-name order (numbers in names compared as numbers, so
``9.jpg`` comes before ``10.jpg``) form the split ``test`` and the others the split ``train``; with
``reference_split: test`` samples are scored against those held-out images instead of the training
images. The CelebA-HQ 128 recipe uses both, as the authors' release trains on ``1.jpg`` to
``27000.jpg`` and scores against the 3,000 images ``27001.jpg`` to ``30000.jpg``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from gn_plugin.data.base import DatasetFiles, EncodedImageDataset, RequiredFile
from gn_plugin.errors import GnPluginError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def natural_order(path: str) -> list[str | int]:
    """Sort key that compares the runs of digits in ``path`` as numbers: ``img9.png`` < ``img10.png``."""
    parts = re.split(r"(\d+)", path)
    return [int(part) if index % 2 else part for index, part in enumerate(parts)]


def check_held_out(held_out: object, reference_split: object) -> None:
    """One-line errors for a bad ``held_out`` or ``reference_split`` option of ``folder``."""
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 0:
        raise GnPluginError(f"dataset 'folder': held_out must be a whole number >= 0, got {held_out!r}")
    if reference_split not in (None, "train", "test"):
        raise GnPluginError(f"dataset 'folder': reference_split must be train or test, got {reference_split!r}")
    if reference_split == "test" and held_out == 0:
        raise GnPluginError("dataset 'folder': reference_split 'test' needs held-out images (set held_out, e.g. 3000)")


class ImageFolder(EncodedImageDataset):
    """The image files found recursively under ``root`` (hidden files skipped), in sorted order.

    ``held_out``: how many images, the last in :func:`natural_order`, make up the split ``test``;
    ``reference_split``: the split samples are scored against.
    """

    def __init__(
        self, root: str, *, resolution: int, split: str, extensions: Sequence[str], resize: str = "squash",
        mirror_symmetric: bool = True, held_out: int = 0, reference_split: str | None = None,
    ) -> None:
        check_held_out(held_out, reference_split)
        super().__init__(
            name="folder", resolution=resolution, split=split, resize=resize, mirror_symmetric=mirror_symmetric,
            splits=("train", "test") if held_out else ("train",),
        )
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(self.root):
            raise GnPluginError(f"dataset 'folder': {self.root} is not an existing directory")
        suffixes = tuple("." + ext.lower().lstrip(".") for ext in extensions)
        files = sorted(
            os.path.join(directory, file)
            for directory, _, files in os.walk(self.root, followlinks=True)
            for file in files
            if file.lower().endswith(suffixes) and not file.startswith(".")
        )
        if not files:
            raise GnPluginError(
                f"dataset 'folder': no images ({', '.join(suffixes)}) found under {self.root}"
            )
        if held_out >= len(files):
            raise GnPluginError(
                f"dataset 'folder': held_out {held_out} leaves no training image ({len(files)} images under {self.root})"
            )
        test = set(sorted(files, key=natural_order)[len(files) - held_out:]) if held_out else set()
        self.files = [file for file in files if (file in test) == (split == "test")]
        self.reference_split = None if reference_split in (None, split) else reference_split

    def __len__(self) -> int:
        return len(self.files)

    def encoded(self, index: int) -> tuple[str, str]:
        return self.files[index], self.files[index]


def folder(
    *,
    root: str,
    resolution: int,
    split: str = "train",
    download: bool = True,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    resize: str = "squash",
    mirror_symmetric: bool = True,
    held_out: int = 0,
    reference_split: str | None = None,
) -> ImageFolder:
    """Dataset ``folder``: images under ``root`` (recursive), RGB, resized to ``resolution`` (``resize``:
    ``squash`` or ``center_crop``), labels 0. The last ``held_out`` images (numeric file-name order) are
    the split ``test``, and ``reference_split: test`` scores samples against them. Set
    ``mirror_symmetric`` false for images that must not be flipped (text, digits). There is nothing to
    download; ``download`` is ignored."""
    return ImageFolder(
        root, resolution=resolution, split=split, extensions=extensions, resize=resize,
        mirror_symmetric=mirror_symmetric, held_out=held_out, reference_split=reference_split,
    )


def folder_files(
    *, root: str, resolution: int | None = None, split: str = "train", extensions: Sequence[str] = IMAGE_EXTENSIONS,
    held_out: int = 0, reference_split: str | None = None,
) -> DatasetFiles:
    """The folder ``root`` itself: the images are the user's to provide."""
    check_held_out(held_out, reference_split)
    root = os.path.abspath(os.path.expanduser(root))
    return DatasetFiles(
        (RequiredFile(root, place=f"put the images under {root}, or point data.root at their folder"),),
        reference_split=None if reference_split in (None, split) else reference_split,
    )


folder.required_files = folder_files
