"""Evaluation: score a generator's samples against a data set's reference statistics.

The data set's ``metric_space`` picks the feature extractor (:mod:`gn_plugin.evaluation.features`);
the reference comes from :mod:`gn_plugin.evaluation.reference`; the metrics are registered components
(:mod:`gn_plugin.metrics.base`). Only features are accumulated, never images, so memory grows with
``num_samples × feature size`` and one batch of images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from torch import nn
from tqdm import tqdm

from gn_plugin.config import Config, EvalConfig
from gn_plugin.data.base import ImageDataset
from gn_plugin.evaluation.features import (
    FeatureExtractor,
    FeatureSet,
    build_extractor,
    dataset_batches,
    extract,
    sampled_batches,
)
from gn_plugin.evaluation.reference import cleanfid_reference, dataset_reference
from gn_plugin.evaluation.sampling import latent_sampler
from gn_plugin.metrics.base import ReferenceStats, compute_metrics, get_metric, needs_reference_features

HALVES_SEED = 0
FLOOR_SEED = 0
EVAL_SEED = 123_456  # the same z at every evaluation, so metrics of different steps compare


def evaluation_sampler(generator: nn.Module, config: Config, device: torch.device | str) -> Callable[[int], Tensor]:
    """The sampler every evaluation of ``generator`` uses: z from :data:`EVAL_SEED`, ``eval.generator_mode``,
    and in train mode batches of ``train.batch_size_g`` (the batch the release samples with)."""
    mode = config.eval.generator_mode
    batch_size = config.train.batch_size_g if mode == "train" else None
    return latent_sampler(generator, device, EVAL_SEED, mode=mode, batch_size=batch_size)


class Evaluator:
    """Scores samples against a data set in its metric space, with the ``eval.*`` settings.

    ``extractor`` overrides the one ``dataset.metric_space`` picks (and ``eval.mode`` for Inception);
    clean-fid's precomputed statistics belong to its own Inception pipelines, so with a custom
    extractor the reference is always computed from the data. ``reference_data``: the images samples
    are scored against where they are not ``dataset`` itself (the split a data set names as its
    ``reference_split``, such as CelebA-HQ 128's 3,000 held-out images); ``dataset`` stays the
    training images. ``held_out`` is the data set's held-out split (for example the same data set
    created with ``split="test"``), used by :meth:`floor`; :meth:`resampled_floor` scores the
    training images at the generated sample count. ``progress`` shows a bar while features are
    extracted.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        settings: EvalConfig,
        device: str | torch.device = "cpu",
        *,
        extractor: FeatureExtractor | None = None,
        held_out: ImageDataset | None = None,
        reference_data: ImageDataset | None = None,
        progress: bool = False,
    ) -> None:
        for name in settings.metrics:
            get_metric(name)  # an unknown name fails before any expensive work
        self.dataset = dataset
        self.reference_data = reference_data or dataset
        self.settings = settings
        self.device = str(device)
        self.held_out = held_out
        self.progress = progress
        uses_cleanfid_stats = (
            extractor is None and dataset.metric_space == "inception"
            and self.reference_data.cleanfid_reference is not None
        )
        self.extractor = extractor or build_extractor(
            dataset.metric_space, inception_path=settings.inception_path, device=self.device, mode=settings.mode,
            pytorch_inception_path=settings.pytorch_inception_path,
        )
        if uses_cleanfid_stats:
            with_features = any(map(needs_reference_features, settings.metrics))
            self.reference = cleanfid_reference(
                *self.reference_data.cleanfid_reference, mode=settings.mode, with_features=with_features,
                cache_dir=settings.cache_dir,
            )
        else:
            self.reference = dataset_reference(
                self.reference_data, self.extractor, settings.batch_size, settings.cache_dir, progress=progress
            )

    def evaluate(self, sample: Callable[[int], Tensor], label: str = "evaluation") -> dict[str, float]:
        """Metrics of ``num_samples`` images from ``sample(n)`` (n images in [-1, 1], NCHW).

        ``label`` names the progress bar.
        """
        batches = sampled_batches(sample, self.settings.num_samples, self.settings.batch_size)
        features = extract(
            batches, self.extractor, progress=label if self.progress else None, total=self.settings.num_samples
        )
        return compute_metrics(self.settings.metrics, features, self.reference)

    def floor(self) -> dict[str, float]:
        """Real-vs-real metrics: what a perfect generator would score with this many samples.

        The held-out split (at most ``num_samples`` images) against the reference; where the reference
        is a held-out split itself (``reference_data``), training images (at most ``num_samples``, drawn
        at random) against it; otherwise a random half of the data set (at most ``num_samples`` images)
        against the other half.
        """
        if self.held_out is not None:
            scored = Subset(self.held_out, range(min(self.settings.num_samples, len(self.held_out))))
            reference = self.reference
        elif self.reference_data is not self.dataset:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(HALVES_SEED))
            scored = Subset(self.dataset, order.tolist()[: self.settings.num_samples])
            reference = self.reference
        else:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(HALVES_SEED))
            first, second = order.tolist()[: len(order) // 2], order.tolist()[len(order) // 2 :]
            reference = ReferenceStats.from_features(self._extract_data(Subset(self.dataset, first)).features)
            scored = Subset(self.dataset, second[: self.settings.num_samples])
        return compute_metrics(self.settings.metrics, self._extract_data(scored), reference)

    def resampled_floor(self, draws: int = 20, seed: int = FLOOR_SEED) -> list[dict[str, float]]:
        """Real-vs-real metrics at the generated sample count, once per draw.

        Each draw takes ``num_samples`` images of the data set (the training images) with replacement,
        an i.i.d. sample of its empirical distribution, and scores them against the reference like a
        generator's samples: what a generator that reproduces the training images exactly scores with
        this many samples. With ``progress`` a bar counts the draws.
        """
        real = self._extract_data(self.dataset)
        rng = np.random.default_rng(seed)
        results = []
        for _ in tqdm(range(draws), desc="real-vs-real floor", unit="draw", disable=not self.progress):
            rows = rng.integers(0, len(real.features), size=self.settings.num_samples)
            drawn = FeatureSet(real.features[rows], real.probabilities[rows])
            results.append(compute_metrics(self.settings.metrics, drawn, self.reference))
        return results

    def _extract_data(self, dataset: Dataset) -> FeatureSet:
        return extract(dataset_batches(dataset, self.settings.batch_size), self.extractor)
