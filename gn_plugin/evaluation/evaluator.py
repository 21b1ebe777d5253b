"""Evaluation: score a generator's samples against a data set's reference statistics.

The data set's ``metric_space`` picks the feature extractor (:mod:`gn_plugin.evaluation.features`);
the reference comes from :mod:`gn_plugin.evaluation.reference`; the metrics are registered components
(:mod:`gn_plugin.metrics.base`). Only features are accumulated, never images, so memory grows with
``num_samples × feature size`` and one batch of images.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from gn_plugin.config import EvalConfig
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
from gn_plugin.metrics.base import ReferenceStats, compute_metrics, get_metric

HALVES_SEED = 0
EVAL_SEED = 123_456  # the same z at every evaluation, so metrics of different steps compare


class Evaluator:
    """Scores samples against a data set in its metric space, with the ``eval.*`` settings.

    ``extractor`` overrides the one ``dataset.metric_space`` picks; clean-fid's precomputed
    statistics belong to its own Inception pipeline, so with a custom extractor the reference is
    always computed from the data. ``held_out`` is the data set's held-out split (for example the
    same data set created with ``split="test"``), used by :meth:`floor`. ``progress`` shows a bar
    while features are extracted.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        settings: EvalConfig,
        device: str | torch.device = "cpu",
        *,
        extractor: FeatureExtractor | None = None,
        held_out: ImageDataset | None = None,
        progress: bool = False,
    ) -> None:
        for name in settings.metrics:
            get_metric(name)  # an unknown name fails before any expensive work
        self.dataset = dataset
        self.settings = settings
        self.device = str(device)
        self.held_out = held_out
        self.progress = progress
        uses_cleanfid_stats = (
            extractor is None and dataset.metric_space == "inception" and dataset.cleanfid_reference is not None
        )
        self.extractor = extractor or build_extractor(
            dataset.metric_space, inception_path=settings.inception_path, device=self.device
        )
        if uses_cleanfid_stats:
            self.reference = cleanfid_reference(
                *dataset.cleanfid_reference, with_features="kid" in settings.metrics, cache_dir=settings.cache_dir
            )
        else:
            self.reference = dataset_reference(
                dataset, self.extractor, settings.batch_size, settings.cache_dir, progress=progress
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

        The held-out split (at most ``num_samples`` images) against the reference; without one, a
        random half of the data set (at most ``num_samples`` images) against the other half.
        """
        if self.held_out is not None:
            scored = Subset(self.held_out, range(min(self.settings.num_samples, len(self.held_out))))
            reference = self.reference
        else:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(HALVES_SEED))
            first, second = order.tolist()[: len(order) // 2], order.tolist()[len(order) // 2 :]
            reference = ReferenceStats.from_features(self._extract_data(Subset(self.dataset, first)).features)
            scored = Subset(self.dataset, second[: self.settings.num_samples])
        return compute_metrics(self.settings.metrics, self._extract_data(scored), reference)

    def _extract_data(self, dataset: Dataset) -> FeatureSet:
        return extract(dataset_batches(dataset, self.settings.batch_size), self.extractor)
