"""Sample-quality metrics, registered by name (in the style of stylegan2-ada-pytorch's metric registry).

A metric is a small function ``(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]``;
it returns a dict because one computation can give several numbers (``is`` gives its mean and its
std over the splits). FID and KID are clean-fid's own ``frechet_distance`` and ``kernel_distance``.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from cleanfid.fid import frechet_distance, kernel_distance
from scipy.special import rel_entr

from gn_plugin.errors import GnPluginError


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
_METRICS: dict[str, Metric] = {}
_HIGHER_IS_BETTER: set[str] = set()


def metric(name: str, *, higher_is_better: bool = False) -> Callable[[Metric], Metric]:
    """Decorator registering a metric function under ``name``."""

    def register(function: Metric) -> Metric:
        if name in _METRICS:
            raise GnPluginError(f"metric '{name}' is already registered")
        _METRICS[name] = function
        if higher_is_better:
            _HIGHER_IS_BETTER.add(name)
        return function

    return register


def list_metrics() -> list[str]:
    """Names of the registered metrics, sorted."""
    return sorted(_METRICS)


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; unknown names are a one-line error."""
    try:
        return _METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list_metrics(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise GnPluginError(
            f"unknown metric '{name}'{hint} (available: {', '.join(list_metrics())})"
        ) from None


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (IS, coverage) rather than worse (FID, KID)."""
    get_metric(name)
    return name in _HIGHER_IS_BETTER


def compute_metrics(
    names: Sequence[str], generated: FeatureSet, reference: ReferenceStats
) -> dict[str, float]:
    """Run the metrics ``names`` and merge their results into one dict."""
    results: dict[str, float] = {}
    for name in names:
        results.update(get_metric(name)(generated, reference))
    return results


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global generator inside the block and restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def inception_score(probabilities: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Mean and std over ``num_splits`` splits of exp(E[KL(p(y|x) || p(y))]) (Salimans et al.).

    With fewer samples than splits, each sample is its own split.
    """
    count = len(probabilities)
    num_splits = min(num_splits, count)
    scores = []
    for index in range(num_splits):
        part = probabilities[index * count // num_splits : (index + 1) * count // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        # rel_entr is 0 where p(y|x) = 0, where the textbook p·(log p - log q) gives nan.
        scores.append(np.exp(rel_entr(part, marginal).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def class_coverage(probabilities: np.ndarray) -> float:
    """Fraction of the K classes that are the argmax of at least one sample."""
    return len(np.unique(probabilities.argmax(axis=1))) / probabilities.shape[1]


@metric("fid")
def fid(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Fréchet distance between Gaussians fitted to the generated and the reference features."""
    stats = ReferenceStats.from_features(generated.features)
    return {"fid": float(frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma))}


@metric("kid")
def kid(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Unbiased squared MMD with a cubic polynomial kernel, averaged over 100 subsets (seeded)."""
    if reference.features is None:
        raise GnPluginError("metric 'kid' needs the reference features, and these statistics have none")
    # kernel_distance draws its subsets from numpy's global generator; a fixed seed makes KID repeatable.
    with seeded_numpy(0):
        return {"kid": kernel_distance(generated.features, reference.features)}


@metric("is", higher_is_better=True)
def inception_score_metric(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Inception Score over 10 splits (with the classifier's probabilities in the digits space)."""
    mean, std = inception_score(generated.probabilities)
    return {"is": mean, "is_std": std}


@metric("coverage", higher_is_better=True)
def coverage(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Fraction of classes predicted for at least one generated sample (meant for the digits classifier)."""
    return {"coverage": class_coverage(generated.probabilities)}
