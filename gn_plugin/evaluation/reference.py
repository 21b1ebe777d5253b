"""Reference statistics of the real images: clean-fid's precomputed ones, or computed once and cached.

A data set that names clean-fid's statistics (``cleanfid_reference``) uses them, those of the
``eval.mode`` pipeline (from the cache or clean-fid's folder, see :mod:`gn_plugin.evaluation.assets`);
any other is run through the extractor once and cached as ``.npz`` in the cache (``eval.cache_dir``),
keyed by the data set's name, resolution, the extractor's name (its weights and, for Inception,
clean-fid's mode) and a fingerprint of all its images. An unreadable cache file is computed again.
"""

from __future__ import annotations

import hashlib
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cleanfid.features import get_reference_statistics
from torch.utils.data import Dataset

from gn_plugin.atomic import write_atomically
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.assets import cache_dir, cleanfid_statistics, locate
from gn_plugin.evaluation.features import FeatureExtractor, dataset_batches, extract
from gn_plugin.metrics.base import ReferenceStats


def precomputed(name: str, resolution: int, split: str, metric: str, mode: str, cache: str | None) -> Any:
    """One of clean-fid's statistics files, from the cache or clean-fid's folder, else fetched by clean-fid."""
    found = locate(cleanfid_statistics(name, resolution, split, mode, kid=metric == "KID", configured_cache=cache))
    if found.path is None:
        return get_reference_statistics(name, resolution, mode=mode, split=split, metric=metric)
    with np.load(found.path) as stats:
        return stats["feats"] if metric == "KID" else (stats["mu"], stats["sigma"])


def cleanfid_reference(
    name: str, resolution: int, split: str, *, mode: str = "clean", with_features: bool, cache_dir: str | None = None
) -> ReferenceStats:
    """clean-fid's precomputed statistics of its pipeline ``mode`` (KID features only when asked: they are large)."""
    try:
        mu, sigma = precomputed(name, resolution, split, "FID", mode, cache_dir)
        features = precomputed(name, resolution, split, "KID", mode, cache_dir) if with_features else None
    except Exception as exc:  # download (urllib, ssl, OS) and .npz errors alike mean "no statistics"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise GnPluginError(
            f"clean-fid reference statistics for {name} {resolution}px split '{split}' (mode {mode}) "
            f"could not be fetched or read ({reason})"
        ) from None
    return ReferenceStats(mu, sigma, features)


def dataset_fingerprint(dataset: Dataset) -> str:
    """Short hash of every image as the data set stores it, and of the first, middle and last as decoded.

    The stored bytes (files, arrays, tensors: :meth:`ImageDataset.feed_digest`) change with any image;
    the decoded ones with the way images are cropped and resized.
    """
    digest = hashlib.sha256(str(len(dataset)).encode())
    if isinstance(dataset, ImageDataset):
        dataset.feed_digest(digest)
    else:
        ImageDataset.feed_digest(dataset, digest)  # type: ignore[arg-type]
    for index in sorted({0, len(dataset) // 2, len(dataset) - 1}):
        digest.update(torch.as_tensor(dataset[index][0]).cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def reference_cache_path(cache: str | None, dataset: ImageDataset, extractor: FeatureExtractor) -> Path:
    """``<cache>/<name>-<res>px-<extractor>-<fingerprint>.npz`` (``cache``: ``eval.cache_dir``, None: the project's)."""
    key = f"{dataset.name}-{dataset.resolution}px-{extractor.name}-{dataset_fingerprint(dataset)}"
    return cache_dir(cache) / (re.sub(r"[^\w.-]", "_", key) + ".npz")


def save_reference(reference: ReferenceStats, path: Path) -> None:
    """Write reference statistics (mean, covariance, features) to ``path`` atomically."""
    write_atomically(
        path,
        lambda file: np.savez(file, mu=reference.mu, sigma=reference.sigma, features=reference.features),
    )


def load_reference(path: Path) -> ReferenceStats:
    """Reference statistics written by :func:`save_reference`; an unreadable file is a one-line error."""
    try:
        with np.load(path) as stats:
            reference = ReferenceStats(stats["mu"], stats["sigma"], stats["features"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise GnPluginError(f"{path}: unreadable reference statistics ({type(exc).__name__}: {exc})") from None
    if reference.mu.ndim != 1 or reference.sigma.shape != (len(reference.mu),) * 2:
        raise GnPluginError(f"{path}: unreadable reference statistics (mean {reference.mu.shape}, covariance {reference.sigma.shape})")
    return reference


def dataset_reference(
    dataset: ImageDataset, extractor: FeatureExtractor, batch_size: int, cache: str | None, *, progress: bool = False
) -> ReferenceStats:
    """Reference statistics of ``dataset``: read from the cache, or computed once and cached (again if unreadable)."""
    path = reference_cache_path(cache, dataset, extractor)
    if path.is_file():
        try:
            return load_reference(path)
        except GnPluginError as exc:
            warnings.warn(f"{exc}; computing them again", stacklevel=2)
    label = f"reference statistics of {dataset.name}" if progress else None
    batches = dataset_batches(dataset, batch_size)
    reference = ReferenceStats.from_features(extract(batches, extractor, progress=label, total=len(dataset)).features)
    save_reference(reference, path)
    return reference
