"""Manifold metrics against the reference package ``prdc`` (directly and as registered metrics), block-size
invariance and sanity cases."""

from __future__ import annotations

import numpy as np
import prdc
import pytest

from gn_plugin.errors import GnPluginError
from gn_plugin.metrics import manifold
from gn_plugin.metrics.base import FeatureSet, ReferenceStats, compute_metrics, higher_is_better, needs_reference_features
from gn_plugin.metrics.manifold import density_coverage, knn_radii, precision_recall

CASES = [(0, 40, 55, 16), (1, 73, 50, 32), (2, 120, 97, 64), (3, 64, 64, 24)]


def _features(seed: int, n_real: int, n_fake: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping but shifted Gaussian clouds, so all four metrics fall strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, dim))
    fake = rng.normal(loc=0.3, scale=1.2, size=(n_fake, dim))
    return real, fake


@pytest.mark.parametrize("seed, n_real, n_fake, dim", CASES)
@pytest.mark.parametrize("k", [3, 5])
def test_matches_prdc(seed: int, n_real: int, n_fake: int, dim: int, k: int) -> None:
    real, fake = _features(seed, n_real, n_fake, dim)
    expected = prdc.compute_prdc(real, fake, nearest_k=k)
    precision, recall = precision_recall(real, fake, k=k)
    density, coverage = density_coverage(real, fake, k=k)
    assert precision == pytest.approx(expected["precision"], abs=1e-12)
    assert recall == pytest.approx(expected["recall"], abs=1e-12)
    assert density == pytest.approx(expected["density"], abs=1e-12)
    assert coverage == pytest.approx(expected["coverage"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [3, 5])
def test_matches_prdc_with_ties_and_duplicates(seed: int, k: int) -> None:
    """Small-integer features: exact distances, many ties and duplicate points, so ``<`` vs ``<=`` matters."""
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 3, size=(60, 4)).astype(np.float64)
    fake = rng.integers(0, 3, size=(50, 4)).astype(np.float64)
    expected = prdc.compute_prdc(real, fake, nearest_k=k)
    ours = precision_recall(real, fake, k, block_size=7) + density_coverage(real, fake, k, block_size=7)
    assert ours == pytest.approx(tuple(expected[m] for m in ("precision", "recall", "density", "coverage")), abs=1e-12)


def test_radii_match_prdc() -> None:
    real, _ = _features(4, 90, 10, 32)
    expected = prdc.prdc.compute_nearest_neighbour_distances(real, nearest_k=3)
    np.testing.assert_allclose(knn_radii(real, k=3), expected, rtol=1e-12)


def test_default_k_values() -> None:
    real, fake = _features(5, 60, 70, 16)
    pr, dc = prdc.compute_prdc(real, fake, nearest_k=3), prdc.compute_prdc(real, fake, nearest_k=5)
    assert precision_recall(real, fake) == pytest.approx((pr["precision"], pr["recall"]), abs=1e-12)
    assert density_coverage(real, fake) == pytest.approx((dc["density"], dc["coverage"]), abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_block_size_does_not_change_results(block_size: int) -> None:
    real, fake = _features(6, 50, 45, 24)
    whole = max(len(real), len(fake))
    np.testing.assert_allclose(knn_radii(real, 3, block_size), knn_radii(real, 3, whole), rtol=1e-12)
    assert precision_recall(real, fake, 3, block_size) == precision_recall(real, fake, 3, whole)
    assert density_coverage(real, fake, 5, block_size) == density_coverage(real, fake, 5, whole)


def test_identical_sets_are_fully_covered() -> None:
    real, _ = _features(7, 80, 1, 16)
    precision, recall = precision_recall(real, real.copy(), block_size=7)
    _, coverage = density_coverage(real, real.copy(), block_size=7)
    assert (precision, recall, coverage) == (1.0, 1.0, 1.0)


def test_far_apart_clusters_score_zero() -> None:
    real, fake = _features(8, 40, 30, 16)
    assert precision_recall(real, fake + 100.0) == (0.0, 0.0)
    assert density_coverage(real, fake + 100.0) == (0.0, 0.0)


def test_float32_input_is_accepted() -> None:
    real, fake = _features(9, 50, 40, 16)
    assert precision_recall(real.astype(np.float32), fake.astype(np.float32)) == pytest.approx(
        precision_recall(real, fake), abs=1e-12
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r, f: precision_recall(r, f, k=10), r"k=10 .*real samples \(10\)"),
        (lambda r, f: precision_recall(f, r, k=10), r"k=10 .*fake samples \(10\)"),
        (lambda r, f: density_coverage(r, f, k=12), r"k=12 .*real samples \(10\)"),
        (lambda r, f: knn_radii(r, k=0), r"k=0 .*input samples \(10\)"),
    ],
)
def test_bad_k_is_a_one_line_error(call, message: str) -> None:
    real, fake = _features(10, 10, 20, 8)
    with pytest.raises(GnPluginError, match=message) as info:
        call(real, fake)
    assert "\n" not in str(info.value)


def test_bad_shapes_are_errors() -> None:
    real, fake = _features(11, 10, 20, 8)
    with pytest.raises(GnPluginError, match="dimension: 8 vs 7"):
        precision_recall(real, fake[:, :7])
    with pytest.raises(GnPluginError, match=r"shape \(10,\)"):
        density_coverage(real[:, 0], fake)
    with pytest.raises(GnPluginError, match="block_size"):
        knn_radii(real, 3, block_size=0)


# -- as registered metrics ---------------------------------------------------------------------------
def test_registered_metrics_match_prdc_through_the_evaluator_path() -> None:
    """The names in eval.metrics, run by compute_metrics on a FeatureSet and ReferenceStats, give prdc's values."""
    real, fake = _features(12, 90, 80, 16)
    generated = FeatureSet(fake, np.full((len(fake), 2), 0.5))
    names = ["fid", "precision", "recall", "density", "coverage"]
    results = compute_metrics(names, generated, ReferenceStats.from_features(real))
    pr, dc = prdc.compute_prdc(real, fake, nearest_k=3), prdc.compute_prdc(real, fake, nearest_k=5)
    expected = {"precision": pr["precision"], "recall": pr["recall"], "density": dc["density"], "coverage": dc["coverage"]}
    assert {name: results[name] for name in expected} == pytest.approx(expected, abs=1e-12)
    assert all(higher_is_better(name) and needs_reference_features(name) for name in expected)


def test_a_metric_pair_is_computed_once(monkeypatch) -> None:
    real, fake = _features(13, 40, 40, 8)
    calls = []
    monkeypatch.setattr(manifold, "precision_recall", lambda *args, **kwargs: calls.append(1) or (0.25, 0.5))
    results = compute_metrics(["recall", "precision"], FeatureSet(fake, fake), ReferenceStats.from_features(real))
    assert results == {"precision": 0.25, "recall": 0.5} and len(calls) == 1


@pytest.mark.parametrize("name, message", [("recall", "'precision' and 'recall'"), ("coverage", "'density' and 'coverage'")])
def test_statistics_without_reference_features_are_a_one_line_error(name: str, message: str) -> None:
    real, fake = _features(14, 30, 30, 8)
    statistics_only = ReferenceStats(real.mean(axis=0), np.cov(real, rowvar=False))  # as clean-fid's precomputed ones
    with pytest.raises(GnPluginError, match=f"metrics {message} need the reference features") as info:
        compute_metrics([name], FeatureSet(fake, fake), statistics_only)
    assert "\n" not in str(info.value)
