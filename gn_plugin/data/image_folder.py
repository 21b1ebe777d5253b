"""Dataset ``folder``: every image under a directory (e.g. CelebA-HQ 256), unlabelled, decoded lazily."""

from __future__ import annotations

import os
from collections.abc import Sequence

from gn_plugin.data.base import DatasetFiles, EncodedImageDataset, RequiredFile
from gn_plugin.errors import GnPluginError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageFolder(EncodedImageDataset):
    """The image files found recursively under ``root`` (hidden files skipped), in sorted order."""

    def __init__(
        self, root: str, *, resolution: int, split: str, extensions: Sequence[str], resize: str = "squash"
    ) -> None:
        super().__init__(name="folder", resolution=resolution, split=split, resize=resize)
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(self.root):
            raise GnPluginError(f"dataset 'folder': {self.root} is not an existing directory")
        suffixes = tuple("." + ext.lower().lstrip(".") for ext in extensions)
        self.files = sorted(
            os.path.join(directory, file)
            for directory, _, files in os.walk(self.root, followlinks=True)
            for file in files
            if file.lower().endswith(suffixes) and not file.startswith(".")
        )
        if not self.files:
            raise GnPluginError(
                f"dataset 'folder': no images ({', '.join(suffixes)}) found under {self.root}"
            )

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
) -> ImageFolder:
    """Dataset ``folder``: images under ``root`` (recursive), RGB, resized to ``resolution`` (``resize``:
    ``squash`` or ``center_crop``), labels 0. There is nothing to download; ``download`` is ignored."""
    return ImageFolder(root, resolution=resolution, split=split, extensions=extensions, resize=resize)


def folder_files(
    *, root: str, resolution: int | None = None, split: str = "train", extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> DatasetFiles:
    """The folder ``root`` itself: the images are the user's to provide."""
    root = os.path.abspath(os.path.expanduser(root))
    return DatasetFiles((RequiredFile(root, place=f"put the images under {root}, or point data.root at their folder"),))


folder.required_files = folder_files
