"""Evaluation: score a generator's samples against a data set's reference statistics.

The data set's ``metric_space`` picks the feature extractor. Reference statistics are clean-fid's
precomputed ones when the data set names them (``cleanfid_reference``), else computed once from the
data set and cached as ``.npz`` in ``cache_dir``. Only features are accumulated, never images, so
memory grows with ``num_samples × feature size`` and one batch of images.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from cleanfid.features import get_reference_statistics
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.runner.checkpoint import write_atomically
from gn_plugin.runner.feature_extractors import FeatureExtractor, build_extractor
from gn_plugin.runner.metrics import FeatureSet, ReferenceStats, compute_metrics, get_metric
from gn_plugin.runner.sampling import latent_sampler

if TYPE_CHECKING:
    from gn_plugin.runner.config import Config

HALVES_SEED = 0
EVAL_SEED = 123_456  # the same z at every evaluation, so metrics of different steps compare


@dataclass
class EvalOptions:
    """What to measure and how: sample count, batch size, metric names, weights, cache, device."""

    num_samples: int = 10_000
    batch_size: int = 500
    metrics: Sequence[str] = ("fid", "kid", "is")
    inception_path: str | None = None  # None: clean-fid's location, downloaded there when missing
    cache_dir: str = "~/.cache/gn_plugin"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.num_samples < 2 or self.batch_size < 1:
            raise GnPluginError(
                f"evaluation: num_samples must be >= 2 and batch_size >= 1, "
                f"got {self.num_samples} and {self.batch_size}"
            )


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


def extract(batches: Iterable[Tensor], extractor: FeatureExtractor) -> FeatureSet:
    """Features and probabilities of all batches, gathered on the CPU under ``torch.no_grad``."""
    features, probabilities = [], []
    with torch.no_grad():  # grad mode is global, so it also covers the sampler the batches come from
        for images in batches:
            batch_features, batch_probabilities = extractor(images)
            features.append(batch_features.float().cpu().numpy())
            probabilities.append(batch_probabilities.float().cpu().numpy())
    return FeatureSet(np.concatenate(features), np.concatenate(probabilities))


def cleanfid_reference(name: str, resolution: int, split: str, *, with_features: bool) -> ReferenceStats:
    """clean-fid's precomputed "clean" statistics (KID features only when asked: they are large)."""
    try:
        mu, sigma = get_reference_statistics(name, resolution, mode="clean", split=split)
        features = (
            get_reference_statistics(name, resolution, mode="clean", split=split, metric="KID")
            if with_features
            else None
        )
    except Exception as exc:  # download (urllib, ssl, OS) and .npz errors alike mean "no statistics"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise GnPluginError(
            f"clean-fid reference statistics for {name} {resolution}px split '{split}' "
            f"could not be fetched or read ({reason})"
        ) from None
    return ReferenceStats(mu, sigma, features)


def dataset_fingerprint(dataset: Dataset) -> str:
    """Short hash of the size and the first, middle and last images: tells same-named data sets apart."""
    digest = hashlib.sha256(str(len(dataset)).encode())
    for index in sorted({0, len(dataset) // 2, len(dataset) - 1}):
        digest.update(torch.as_tensor(dataset[index][0]).cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def reference_cache_path(cache_dir: str, dataset: ImageDataset, extractor: FeatureExtractor) -> Path:
    """``cache_dir/<name>-<split>-<res>px-<extractor>-<fingerprint>.npz``."""
    split = getattr(dataset, "split", "train")
    key = f"{dataset.name}-{split}-{dataset.resolution}px-{extractor.name}-{dataset_fingerprint(dataset)}"
    return Path(cache_dir).expanduser() / (re.sub(r"[^\w.-]", "_", key) + ".npz")


def save_reference(reference: ReferenceStats, path: Path) -> None:
    """Write reference statistics (mean, covariance, features) to ``path`` atomically."""
    write_atomically(
        path,
        lambda file: np.savez(file, mu=reference.mu, sigma=reference.sigma, features=reference.features),
    )


def load_reference(path: Path) -> ReferenceStats:
    """Reference statistics written by :func:`save_reference`."""
    with np.load(path) as stats:
        return ReferenceStats(stats["mu"], stats["sigma"], stats["features"])


def dataset_reference(
    dataset: ImageDataset, extractor: FeatureExtractor, batch_size: int, cache_dir: str
) -> ReferenceStats:
    """Reference statistics of ``dataset``: read from the cache, or computed once and cached."""
    path = reference_cache_path(cache_dir, dataset, extractor)
    if path.is_file():
        return load_reference(path)
    reference = ReferenceStats.from_features(extract(dataset_batches(dataset, batch_size), extractor).features)
    save_reference(reference, path)
    return reference


class Evaluator:
    """Scores samples against a data set in its metric space.

    ``extractor`` overrides the one ``dataset.metric_space`` picks; clean-fid's precomputed
    statistics belong to its own Inception pipeline, so with a custom extractor the reference is
    always computed from the data. ``held_out`` is the data set's held-out split (for example the
    same data set created with ``split="test"``), used by :meth:`floor`.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        options: EvalOptions,
        *,
        extractor: FeatureExtractor | None = None,
        held_out: ImageDataset | None = None,
    ) -> None:
        for name in options.metrics:
            get_metric(name)  # an unknown name fails before any expensive work
        self.dataset = dataset
        self.options = options
        self.held_out = held_out
        uses_cleanfid_stats = (
            extractor is None and dataset.metric_space == "inception" and dataset.cleanfid_reference is not None
        )
        self.extractor = extractor or build_extractor(
            dataset.metric_space, inception_path=options.inception_path, device=options.device
        )
        if uses_cleanfid_stats:
            self.reference = cleanfid_reference(
                *dataset.cleanfid_reference, with_features="kid" in options.metrics
            )
        else:
            self.reference = dataset_reference(dataset, self.extractor, options.batch_size, options.cache_dir)

    def evaluate(self, sample: Callable[[int], Tensor]) -> dict[str, float]:
        """Metrics of ``num_samples`` images from ``sample(n)`` (n images in [-1, 1], NCHW)."""
        batches = sampled_batches(sample, self.options.num_samples, self.options.batch_size)
        return compute_metrics(self.options.metrics, extract(batches, self.extractor), self.reference)

    def floor(self) -> dict[str, float]:
        """Real-vs-real metrics: what a perfect generator would score with this many samples.

        The held-out split (at most ``num_samples`` images) against the reference; without one, a
        random half of the data set (at most ``num_samples`` images) against the other half.
        """
        if self.held_out is not None:
            scored = Subset(self.held_out, range(min(self.options.num_samples, len(self.held_out))))
            reference = self.reference
        else:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(HALVES_SEED))
            first, second = order.tolist()[: len(order) // 2], order.tolist()[len(order) // 2 :]
            reference = ReferenceStats.from_features(self._extract_data(Subset(self.dataset, first)).features)
            scored = Subset(self.dataset, second[: self.options.num_samples])
        return compute_metrics(self.options.metrics, self._extract_data(scored), reference)

    def _extract_data(self, dataset: Dataset) -> FeatureSet:
        return extract(dataset_batches(dataset, self.options.batch_size), self.extractor)


def held_out_split(config: Config, dataset: ImageDataset) -> ImageDataset | None:
    """The data set's ``test`` split at the training resolution, or None where it has none."""
    try:
        from gn_plugin.runner.components import build_dataset

        return build_dataset(config, split="test", resolution=dataset.resolution)
    except GnPluginError:
        return None


def build_evaluator(
    config: Config, dataset: ImageDataset, device: str | torch.device, *, with_floor: bool = False
) -> Evaluator:
    """The evaluator of a run: ``config.eval`` options on ``device``.

    ``with_floor`` also loads the held-out split for :meth:`Evaluator.floor` (else it uses halves).
    """
    settings = config.eval
    options = EvalOptions(
        num_samples=settings.num_samples,
        batch_size=settings.batch_size,
        metrics=list(settings.metrics),
        inception_path=settings.inception_path,
        cache_dir=settings.cache_dir,
        device=str(device),
    )
    held_out = held_out_split(config, dataset) if with_floor else None
    return Evaluator(dataset, options, held_out=held_out)


def evaluate_run(run_dir: Path, checkpoint: str = "best", overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Evaluate the raw and EMA generators of a finished (or running) run; appends to ``results.jsonl``."""
    from gn_plugin.runner.saved_run import load_run  # saved_run builds models; keep this module light

    run = load_run(run_dir, checkpoint, overrides)
    evaluator = build_evaluator(run.config, run.dataset, run.device)
    records = []
    for name, generator in (("raw", run.generator), ("ema", run.generator_ema)):
        metrics = evaluator.evaluate(latent_sampler(generator, run.device, seed=EVAL_SEED))
        records.append({"step": run.step, "generator": name, "checkpoint": checkpoint, **metrics})
        run.files.append_result(records[-1])
    run.files.close()
    return records
