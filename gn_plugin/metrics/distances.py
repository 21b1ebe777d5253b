"""Metrics ``fid`` and ``kid``: distances between generated and reference features (clean-fid's own code)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
from cleanfid.fid import frechet_distance, kernel_distance

from gn_plugin.errors import GnPluginError
from gn_plugin.metrics.base import FeatureSet, ReferenceStats, metric


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global generator inside the block and restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@metric()
def fid(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Fréchet distance between Gaussians fitted to the generated and the reference features."""
    stats = ReferenceStats.from_features(generated.features)
    return {"fid": float(frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma))}


@metric(reference_features=True)
def kid(generated: FeatureSet, reference: ReferenceStats) -> dict[str, float]:
    """Unbiased squared MMD with a cubic polynomial kernel, averaged over 100 subsets (seeded)."""
    if reference.features is None:
        raise GnPluginError("metric 'kid' needs the reference features, and these statistics have none")
    # kernel_distance draws its subsets from numpy's global generator; a fixed seed makes KID repeatable.
    with seeded_numpy(0):
        return {"kid": kernel_distance(generated.features, reference.features)}
