"""Dataset ``lmdb``: an LSUN-style LMDB (e.g. LSUN Church 256) whose values are encoded images.

Needs the optional ``lmdb`` package (``pip install gn-plugin[lmdb]``). Each process opens a
database once, lazily, read-only and without locking, and shares it between the data sets that
read it (LMDB refuses a second open in one process). A process closes its databases before it
forks, so that every DataLoader worker opens its own: an LMDB environment does not survive a fork.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from gn_plugin.data.base import DatasetFiles, EncodedImageDataset, RequiredFile
from gn_plugin.errors import GnPluginError

_ENVIRONMENTS: dict[str, Any] = {}  # this process's open databases, by real path


def _lmdb_module() -> ModuleType:
    try:
        import lmdb as module
    except ImportError:
        raise GnPluginError("dataset 'lmdb' needs the lmdb package: pip install gn-plugin[lmdb]") from None
    return module


def _environment(path: str) -> Any:
    """This process's read-only environment of the database at ``path``, opened on first use."""
    key = os.path.realpath(path)
    if key not in _ENVIRONMENTS:
        lmdb = _lmdb_module()
        try:
            _ENVIRONMENTS[key] = lmdb.open(
                path, subdir=os.path.isdir(path), readonly=True, lock=False, readahead=False, meminit=False
            )
        except lmdb.Error as exc:
            raise GnPluginError(f"dataset 'lmdb': cannot open {path} ({exc})") from None
    return _ENVIRONMENTS[key]


def _close_environments() -> None:
    while _ENVIRONMENTS:
        _ENVIRONMENTS.popitem()[1].close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_environments)


class LmdbImages(EncodedImageDataset):
    """The values of an LMDB, one encoded image each, in key order."""

    def __init__(
        self, root: str, *, resolution: int, split: str, resize: str = "squash", mirror_symmetric: bool = True
    ) -> None:
        super().__init__(name="lmdb", resolution=resolution, split=split, resize=resize, mirror_symmetric=mirror_symmetric)
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.exists(self.root):
            raise GnPluginError(f"dataset 'lmdb': {self.root} does not exist")
        with _environment(self.root).begin() as txn:
            self.keys: list[bytes] = list(txn.cursor().iternext(keys=True, values=False))
        if not self.keys:
            raise GnPluginError(f"dataset 'lmdb': {self.root} holds no entries")

    def __len__(self) -> int:
        return len(self.keys)

    def encoded(self, index: int) -> tuple[bytes, str]:
        key = self.keys[index]
        with _environment(self.root).begin() as txn:
            return txn.get(key), f"key {key.decode(errors='replace')!r} in {self.root}"


def lmdb(
    *, root: str, resolution: int, split: str = "train", download: bool = True, resize: str = "squash",
    mirror_symmetric: bool = True,
) -> LmdbImages:
    """Dataset ``lmdb``: the images of an LMDB at ``root``, RGB, resized to ``resolution`` (``resize``:
    ``squash``, as the release squashes LSUN Church, or ``center_crop``), labels 0; ``mirror_symmetric``:
    false for images that must not be flipped. There is nothing to download; ``download`` is ignored."""
    _lmdb_module()
    return LmdbImages(root, resolution=resolution, split=split, resize=resize, mirror_symmetric=mirror_symmetric)


def lmdb_files(*, root: str, resolution: int | None = None, split: str = "train") -> DatasetFiles:
    """The database ``root`` itself: it is the user's to provide."""
    root = os.path.abspath(os.path.expanduser(root))
    return DatasetFiles((RequiredFile(root, place=f"put the LMDB at {root}, or point data.root at it"),))


lmdb.required_files = lmdb_files
