"""The metric contract (in the style of stylegan2-ada-pytorch's metrics: small functions registered by name).

A metric is a function ``metric(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]``
registered in the entry-point group ``gn_plugin.metrics`` like every other component::

    [project.entry-points."gn_plugin.metrics"]
    my-metric = "my_package.metrics:my_metric"

It returns a dict because one computation can give several numbers (``is`` gives its mean and its
std over the splits); the key named like the metric is the one tables and ``eval.best_metric`` use.
Several names may share one function (``precision`` and ``recall`` both give both numbers): a
metric whose key an earlier one in the list already gave is not computed again. A metric whose
larger values are better carries ``higher_is_better = True``, one that needs the reference
features (not only their mean and covariance) ``reference_features = True`` (the :func:`metric`
decorator sets both).

What a metric is handed, all NumPy arrays on the CPU, in the data set's metric space (its
``metric_space``: ``inception``, clean-fid's TF-Inception with d = 2048 and K = 1008, or ``digits``,
the bundled digits classifier with d = 64 and K = 10), from ``eval.num_samples`` generated images:

- ``generated.features``: float32 ``[N, d]``, the extractor's features of the N generated images
  (Inception's pool features);
- ``generated.probabilities``: float32 ``[N, K]``, the extractor's class probabilities of the same
  images (rows sum to 1; what IS and class coverage read);
- ``reference.mu``: ``[d]``, the mean of the real images' features;
- ``reference.sigma``: ``[d, d]``, their covariance (``np.cov(features, rowvar=False)``, as clean-fid);
- ``reference.features``: ``[M, d]``, the real images' features themselves, or None: present when a
  metric of the run declared ``reference_features = True`` (clean-fid's precomputed statistics
  then include its KID features). There are no reference probabilities.

A metric is named in two places: in a run config's ``eval.metrics`` (what a run computes and
stores in ``results.jsonl``) and, to appear in a benchmark's tables, plots and comparisons, in the
benchmark spec's ``metrics:`` (what the report reads). A spec metric that the cells' ``eval.metrics``
does not include has no values in the report; one that is computed but not in ``metrics:`` stays in
the runs' ``results.jsonl`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

from gn_plugin.registry import registry


@dataclass(frozen=True)
class FeatureSet:
    """What an extractor gives for a set of images: ``features`` [N, d] and ``probabilities`` [N, K]."""

    features: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class ReferenceStats:
    """Reference statistics: mean and covariance of the features (FID), the features themselves (KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray) -> ReferenceStats:
        """Statistics of a feature matrix [N, d], computed the way clean-fid computes them."""
        return cls(np.mean(features, axis=0), np.cov(features, rowvar=False), features)


Metric = Callable[[FeatureSet, ReferenceStats], dict[str, float]]
M = TypeVar("M", bound=Metric)


def metric(*, higher_is_better: bool = False, reference_features: bool = False) -> Callable[[M], M]:
    """Decorator marking a function as a metric: its direction and whether it needs the reference features."""

    def mark(function: M) -> M:
        function.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        function.reference_features = reference_features  # type: ignore[attr-defined]
        return function

    return mark


def list_metrics() -> list[str]:
    """Names of the registered metrics, sorted."""
    return registry("metric").names()


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; unknown names are a one-line error with a suggestion."""
    return registry("metric").get(name)


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (IS, precision) rather than worse (FID, KID)."""
    return bool(getattr(get_metric(name), "higher_is_better", False))


def describe_metric(name: str) -> str:
    """``higher is better`` or ``lower is better``, and whether the reference features are needed."""
    direction = "higher is better" if higher_is_better(name) else "lower is better"
    needs = "needs the reference features" if needs_reference_features(name) else "needs the reference statistics only"
    return f"{direction}; {needs}"


def needs_reference_features(name: str) -> bool:
    """Whether metric ``name`` needs the reference features themselves (KID, precision), not only their statistics."""
    return bool(getattr(get_metric(name), "reference_features", False))


def compute_metrics(names: Sequence[str], generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Run the metrics ``names`` and merge their results into one dict.

    A name whose value an earlier metric already gave (``recall`` after ``precision``) is skipped.
    """
    results: dict[str, float] = {}
    for name in names:
        if name not in results:
            results.update(get_metric(name)(generated, reference))
    return results
