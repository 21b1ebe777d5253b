"""Feature-space manifold metrics: improved precision/recall and density/coverage.

Precision/recall follow Kynkäänniemi et al. (2019) and density/coverage Naeem et al. (2020),
with the conventions of the reference package ``prdc``: a sample's k-NN radius is the
(k+1)-th smallest distance to its own set counting itself at distance 0, and "inside a ball"
is the strict ``distance < radius``.

Pairwise Euclidean distances are computed in float64 a block of rows at a time
(``block_size`` rows against the whole other set), so the full distance matrix never exists:
besides float64 copies of non-float64 inputs, the extra memory is one ``block_size x n`` float64
buffer (plus a boolean mask of that shape) for ``n`` samples on the other side.

As registered metrics they compare the generated features with the reference features (the same
features FID uses): ``precision`` and ``recall`` come from one computation (k = 3, as Kynkäänniemi
et al. recommend), ``density`` and ``coverage`` from another (k = 5, as Naeem et al. recommend).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gn_plugin.errors import GnPluginError
from gn_plugin.metrics.base import FeatureSet, ReferenceStats, metric

DEFAULT_BLOCK_SIZE = 1024
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a float64 ``(n, d)`` matrix of finite values, or a GnPluginError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise GnPluginError(f"{name} features must be a non-empty (n, d) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise GnPluginError(f"{name} features contain NaN or infinite values")
    return x


def _check_k(k: int, n: int, name: str) -> None:
    """k nearest neighbours other than the sample itself need ``1 <= k < n``."""
    if not 1 <= k < n:
        raise GnPluginError(f"k={k} needs 1 <= k < number of {name} samples ({n})")


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise GnPluginError(f"block_size must be >= 1, got {block_size}")


def _pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets validated, with the same feature dimension."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise GnPluginError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    return real, fake


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distance_blocks(
    a: np.ndarray, b: np.ndarray, block_size: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, D)`` with ``D[i, j] = ||a[rows][i] - b[j]||`` for successive row blocks of ``a``.

    Uses ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0))`` in float64, the same formula as scikit-learn.
    ``D`` is one reused buffer, overwritten by the next block: use it before asking for the next.
    """
    a_sq, b_sq = _squared_norms(a), _squared_norms(b)
    buffer = np.empty((min(block_size, a.shape[0]), b.shape[0]))
    for start in range(0, a.shape[0], block_size):
        rows = slice(start, min(start + block_size, a.shape[0]))
        d = np.matmul(a[rows], b.T, out=buffer[: rows.stop - start])
        d *= -2.0
        d += a_sq[rows, None]
        d += b_sq[None, :]
        np.maximum(d, 0.0, out=d)
        yield rows, np.sqrt(d, out=d)


def knn_radii(features: np.ndarray, k: int, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Distance of each sample to its k-th nearest other sample (the (k+1)-th counting itself)."""
    x = _as_features(features, "input")
    _check_k(k, x.shape[0], "input")
    _check_block_size(block_size)
    radii = np.empty(x.shape[0])
    for rows, d in _distance_blocks(x, x, block_size):
        block_rows = np.arange(rows.stop - rows.start)
        d[block_rows, block_rows + rows.start] = 0.0
        d.partition(k, axis=1)
        radii[rows] = d[:, k]
    return radii


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[float, float]:
    """Improved precision and recall with k-NN balls.

    Precision: fraction of fake samples inside at least one real k-NN ball.
    Recall: fraction of real samples inside at least one fake k-NN ball.
    """
    real, fake = _pair(real, fake)
    _check_k(k, real.shape[0], "real")
    _check_k(k, fake.shape[0], "fake")
    real_radii = knn_radii(real, k, block_size)
    fake_radii = knn_radii(fake, k, block_size)
    fake_inside = np.zeros(fake.shape[0], dtype=bool)
    real_inside = np.empty(real.shape[0], dtype=bool)
    for rows, d in _distance_blocks(real, fake, block_size):
        fake_inside |= (d < real_radii[rows, None]).any(axis=0)
        real_inside[rows] = (d < fake_radii[None, :]).any(axis=1)
    return float(fake_inside.mean()), float(real_inside.mean())


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[float, float]:
    """Density and coverage with real k-NN balls.

    Density: number of (fake, real ball containing it) pairs divided by ``k * n_fake``.
    Coverage: fraction of real samples whose k-NN ball contains at least one fake sample.
    """
    real, fake = _pair(real, fake)
    _check_k(k, real.shape[0], "real")
    real_radii = knn_radii(real, k, block_size)
    pairs_inside = 0
    real_covered = np.empty(real.shape[0], dtype=bool)
    for rows, d in _distance_blocks(real, fake, block_size):
        inside = d < real_radii[rows, None]
        pairs_inside += int(np.count_nonzero(inside))
        real_covered[rows] = inside.any(axis=1)
    return float((1.0 / k) * (pairs_inside / fake.shape[0])), float(real_covered.mean())


def _reference_features(reference: ReferenceStats, names: str) -> np.ndarray:
    if reference.features is None:
        raise GnPluginError(f"metrics {names} need the reference features, and these statistics have none")
    return reference.features


@metric(higher_is_better=True, reference_features=True)
def precision_recall_metric(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Improved precision and recall (k = 3) of the generated against the reference features."""
    real = _reference_features(reference, "'precision' and 'recall'")
    precision, recall = precision_recall(real, generated.features, k=PRECISION_RECALL_K)
    return {"precision": precision, "recall": recall}


@metric(higher_is_better=True, reference_features=True)
def density_coverage_metric(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Density and coverage (k = 5) of the generated against the reference features."""
    real = _reference_features(reference, "'density' and 'coverage'")
    density, coverage = density_coverage(real, generated.features, k=DENSITY_COVERAGE_K)
    return {"density": density, "coverage": coverage}
