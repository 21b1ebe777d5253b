"""Metrics ``is`` and ``class_coverage``: computed from the class probabilities of the generated images."""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr

from gn_plugin.metrics.base import FeatureSet, ReferenceStats, metric


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


def classes_predicted(probabilities: np.ndarray) -> float:
    """Fraction of the K classes that are the argmax of at least one sample."""
    return len(np.unique(probabilities.argmax(axis=1))) / probabilities.shape[1]


@metric(higher_is_better=True)
def inception_score_metric(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Inception Score over 10 splits (with the classifier's probabilities in the digits space)."""
    mean, std = inception_score(generated.probabilities)
    return {"is": mean, "is_std": std}


@metric(higher_is_better=True)
def class_coverage(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Fraction of classes predicted for at least one generated sample (meant for the digits classifier).

    Not Naeem et al.'s ``coverage``, which measures how much of the real feature manifold is covered.
    """
    return {"class_coverage": classes_predicted(generated.probabilities)}
