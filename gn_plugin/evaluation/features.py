"""Feature extractors: images in [-1, 1] NCHW -> ``(features [N, d], class probabilities [N, K])``.

``inception``: the TF Inception (2015-12-05) weights fed the way one of clean-fid's three modes feeds
them (``eval.mode``), from uint8 pixels (generated images are quantised as when saved to PNG): 2048-d
pool features for FID/KID and 1008-way probabilities without the output bias for IS, from one pass.

- ``clean``: clean-fid's TorchScript port, after its "clean" PIL bicubic resize to 299 (CPU-bound).
- ``legacy_tensorflow``: the same TorchScript file resizing inside, as the TF graph does
  (``tf.image.resize_bilinear`` and its alignment): TTUR's FID and the TF Inception Score.
- ``legacy_pytorch``: pytorch-fid's port of the weights (:func:`load_pytorch_inception`) after
  PyTorch's bilinear resize to 299, as pytorch-gan-metrics (the authors' release) and clean-fid do.

``digits``: the shipped digits classifier (see :mod:`gn_plugin.evaluation.digits_classifier`).
An extractor's ``name`` identifies its network, weights and mode; reference-statistics caches key on it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid import downloads_helper
from cleanfid.resize import build_resizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.assets import check_eval_mode, inception_weights, locate
from gn_plugin.evaluation.digits_classifier import (
    DIGITS_CLASSIFIER_PATH,
    load_digits_classifier,
)
from gn_plugin.evaluation.pytorch_inception import load_pytorch_inception, resolve_pytorch_inception_path
from gn_plugin.metrics.base import FeatureSet

#: clean-fid's three ways of feeding Inception (``eval.mode``)
EVAL_MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")


class FeatureExtractor(Protocol):
    """What the evaluator needs of an extractor."""

    name: str

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]: ...


def file_digest(path: str | os.PathLike) -> str:
    """Short SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def resolve_inception_path(path: str | None = None) -> str:
    """``path`` with ``~`` expanded; by default the first place holding intact weights, the project's
    cache or clean-fid's /tmp, else the cache (where they are fetched to)."""
    return locate(inception_weights(path)).target


def fetch_inception(path: str) -> None:
    """Download the Inception weights with clean-fid to ``path``; a failure is a one-line error."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        # Download into a scratch folder so an interrupted transfer never leaves a truncated file at path.
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            os.replace(downloads_helper.check_download_inception(fpath=scratch), path)
    except Exception as exc:  # urllib, ssl, http.client and OS errors alike mean "no file"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise GnPluginError(
            f"Inception weights not found at {path} and downloading them failed ({reason}); "
            f"fetch {downloads_helper.inception_url} to {path} or set inception_path"
        ) from None


def load_inception(path: str, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """clean-fid's TorchScript Inception from the file ``path``, fetched there if missing."""
    if not os.path.isfile(path):
        fetch_inception(path)
    with warnings.catch_warnings():
        # torch deprecates TorchScript, but these weights are published only as TorchScript.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
        model = torch.jit.load(path, map_location=device).eval()
    if not (hasattr(model, "layers") and hasattr(model, "output")):
        raise GnPluginError(
            f"{path} is not clean-fid's Inception TorchScript (it has no 'layers' and 'output' modules)"
        )
    return model


def to_rgb(images: Tensor) -> Tensor:
    """Repeat grey images to three channels; three-channel images pass through."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise GnPluginError(f"Inception features need 1 or 3 channels, got images of shape {tuple(images.shape)}")
    return images


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] -> uint8 [0, 255], rounded the way stylegan2-ada quantizes generated images."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def clean_resize(pixels: Tensor, resize: Callable[[np.ndarray], np.ndarray]) -> Tensor:
    """uint8 [N, 3, H, W] -> float32 [N, 3, 299, 299] in [0, 255] with clean-fid's per-image resizer."""
    images = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return torch.from_numpy(np.stack([resize(image) for image in images])).permute(0, 3, 1, 2)


class InceptionExtractor:
    """clean-fid's TorchScript Inception: 2048-d pool features and 1008-way probabilities in one pass.

    The TorchScript forward resizes to 299 the way the TF graph does, then computes
    ``features = layers((x - 128) / 128)`` and returns them for ``return_features=True``, else
    ``softmax(features @ output.weight.T)`` for ``no_output_bias=True``; calling it twice would run
    the network twice, so the probabilities are computed here from the features of one pass. In
    ``clean`` mode the images are resized by clean-fid's PIL resizer and ``layers`` is called
    directly (the built-in resize skipped, as clean-fid's own wrapper does); in
    ``legacy_tensorflow`` mode the forward resizes.
    """

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu", mode: str = "clean") -> None:
        if mode not in ("clean", "legacy_tensorflow"):
            raise GnPluginError(f"eval.mode: the TorchScript Inception serves clean and legacy_tensorflow, not {mode!r}")
        path = resolve_inception_path(path)
        self.model = load_inception(path, device)
        self.device = torch.device(device)
        self.mode = mode
        self.name = f"inception-{mode}-{file_digest(path)}"
        self._resize = build_resizer("clean")

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features [N, 2048] and probabilities [N, 1008] of images in [-1, 1]."""
        pixels = to_uint8(to_rgb(images))
        if self.mode == "clean":
            resized = clean_resize(pixels, self._resize).to(self.device)
            features = self.model.layers((resized - 128) / 128).reshape(len(pixels), -1)
        else:
            features = self.model(pixels.to(self.device, torch.float32), return_features=True)
        probabilities = torch.softmax(features @ self.model.output.weight.T, dim=1)
        return features, probabilities


class PytorchInceptionExtractor:
    """clean-fid's ``legacy_pytorch`` pipeline: uint8 pixels, PyTorch bilinear resize to 299 (clipped
    to [0, 255], not re-quantised), pytorch-fid's network on ``2 · pixels / 255 − 1``."""

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu") -> None:
        path = resolve_pytorch_inception_path(path)
        self.network, self.fc_weight = load_pytorch_inception(path, device)
        self.device = torch.device(device)
        self.name = f"inception-legacy_pytorch-{file_digest(path)}"

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features [N, 2048] and probabilities [N, 1008] of images in [-1, 1]."""
        pixels = to_uint8(to_rgb(images)).to(self.device, torch.float32)
        resized = F.interpolate(pixels, size=(299, 299), mode="bilinear", align_corners=False).clamp(0, 255)
        features = self.network(2 * (resized / 255) - 1).reshape(len(pixels), -1)
        return features, torch.softmax(features @ self.fc_weight.T, dim=1)


class DigitsExtractor:
    """The digits classifier: penultimate-layer features and softmax probabilities over 10 digits."""

    def __init__(
        self, path: str | os.PathLike = DIGITS_CLASSIFIER_PATH, device: str | torch.device = "cpu"
    ) -> None:
        self.model = load_digits_classifier(path, device)
        self.device = torch.device(device)
        self.name = f"digits-{file_digest(path)}"

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features [N, 64] and probabilities [N, 10] of images in [-1, 1], any channels or size."""
        features = self.model.features(images.to(self.device, torch.float32))
        return features, torch.softmax(self.model.head(features), dim=1)


def build_extractor(
    metric_space: str,
    *,
    inception_path: str | None = None,
    device: str | torch.device = "cpu",
    mode: str = "clean",
    pytorch_inception_path: str | None = None,
) -> FeatureExtractor:
    """The extractor that scores a data set of ``metric_space`` (``inception`` in clean-fid's ``mode``, or
    ``digits``, which takes ``mode`` clean only)."""
    check_eval_mode(metric_space, mode)
    if metric_space == "inception" and mode == "legacy_pytorch":
        return PytorchInceptionExtractor(pytorch_inception_path, device)
    if metric_space == "inception":
        return InceptionExtractor(inception_path, device, mode)
    if metric_space == "digits":
        return DigitsExtractor(device=device)
    raise GnPluginError(f"unknown metric_space '{metric_space}' (choose inception or digits)")


# -- batches to features ----------------------------------------------------------------------------
def sampled_batches(sample: Callable[[int], Tensor], num_samples: int, batch_size: int) -> Iterator[Tensor]:
    """Batches ``sample(n)`` adding up to ``num_samples`` images."""
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        images = sample(count)
        if images.shape[0] != count:
            raise GnPluginError(f"evaluation: sample({count}) returned {images.shape[0]} images")
        yield images


def dataset_batches(dataset: Dataset, batch_size: int) -> Iterator[Tensor]:
    """The images of ``dataset`` in order, in batches, labels dropped."""
    for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        yield images


def extract(
    batches: Iterable[Tensor], extractor: FeatureExtractor, *, progress: str | None = None, total: int | None = None
) -> FeatureSet:
    """Features and probabilities of all batches, gathered on the CPU under ``torch.no_grad``.

    ``progress``: the label of a progress bar over the ``total`` images (none without a label).
    """
    features, probabilities = [], []
    with torch.no_grad(), tqdm(total=total, desc=progress, unit="img", disable=progress is None, leave=False) as bar:
        # grad mode is global, so it also covers the sampler the batches come from
        for images in batches:
            batch_features, batch_probabilities = extractor(images)
            features.append(batch_features.float().cpu().numpy())
            probabilities.append(batch_probabilities.float().cpu().numpy())
            bar.update(len(images))
    return FeatureSet(np.concatenate(features), np.concatenate(probabilities))
