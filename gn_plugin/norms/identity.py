"""Norm ``none``: the discriminator's raw score, unconstrained (the baseline, and WGAN-GP's critic)."""

from __future__ import annotations

from torch import nn

from gn_plugin.norms.base import ScoreWrapper


def no_norm(discriminator: nn.Module) -> ScoreWrapper:
    """Norm ``none``: return ``discriminator`` wrapped so that it scores ``[B]``, nothing else."""
    return ScoreWrapper(discriminator)
