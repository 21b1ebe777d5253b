"""Adversarial losses (entry-point group ``gn_plugin.losses``), applied to the scores the norm returns.

The loss contract: an object with ``d_loss(real_scores, fake_scores) -> Tensor`` and
``g_loss(fake_scores) -> Tensor``, built by ``factory(**options)``. Scores have shape ``[B]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


class AdversarialLoss:
    """Base class: subclasses define the discriminator and generator objectives."""

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HingeLoss(AdversarialLoss):
    """``hinge``: D mean(relu(1 − r)) + mean(relu(1 + f)); G −mean(f). Under GN it equals Wasserstein + 2."""

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean()


class NonSaturatingLoss(AdversarialLoss):
    """``ns``: BCE with logits; D softplus(−r) + softplus(f); G softplus(−f) (means)."""

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        return F.softplus(-fake_scores).mean()


class WassersteinLoss(AdversarialLoss):
    """``wasserstein``: D −mean(r) + mean(f); G −mean(f)."""

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return fake_scores.mean() - real_scores.mean()

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean()


class LeastSquaresLoss(AdversarialLoss):
    """``ls`` (LSGAN, a=0, b=c=1): D ½mean((r − 1)²) + ½mean(f²); G ½mean((f − 1)²)."""

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return 0.5 * ((real_scores - 1) ** 2).mean() + 0.5 * (fake_scores**2).mean()

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        return 0.5 * ((fake_scores - 1) ** 2).mean()
