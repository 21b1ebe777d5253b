"""Loss ``fgan``: f-GAN (Nowozin, Cseke and Tomioka, NeurIPS 2016) for a chosen f-divergence.

With the output activation g_f and the Fenchel conjugate f* of the divergence's generator f
(Table 2 of the paper), on the scores V the norm returns:

    D loss = −mean(g_f(V_real)) + mean(f*(g_f(V_fake)))
    G loss = −mean(g_f(V_fake))          (the paper's non-saturating generator objective)

``js`` is the original GAN up to a constant: its D loss equals the ``ns`` loss minus 2·log 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gn_plugin.errors import GnPluginError
from gn_plugin.losses import AdversarialLoss

#: divergence -> (g_f, f* ∘ g_f), both written in closed form for numerical stability
DIVERGENCES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "kl": (lambda v: v, lambda v: torch.exp(v - 1)),  # f*(t) = exp(t − 1)
    "reverse_kl": (lambda v: -torch.exp(-v), lambda v: v - 1),  # f*(t) = −1 − log(−t)
    "pearson": (lambda v: v, lambda v: v + v**2 / 4),  # f*(t) = t + t²/4
    "hellinger": (lambda v: 1 - torch.exp(-v), lambda v: torch.exp(v) - 1),  # squared Hellinger, f*(t) = t/(1 − t)
    "js": (lambda v: math.log(2) - F.softplus(-v), lambda v: F.softplus(v) - math.log(2)),  # f*(t) = −log(2 − eᵗ)
}


class FGANLoss(AdversarialLoss):
    """``fgan``: the f-GAN objective of ``divergence`` (kl, reverse_kl, pearson, hellinger or js)."""

    def __init__(self, divergence: str = "pearson") -> None:
        if divergence not in DIVERGENCES:
            raise GnPluginError(f"loss 'fgan': unknown divergence '{divergence}' (choose {', '.join(DIVERGENCES)})")
        self.divergence = divergence
        self.activation, self.conjugate = DIVERGENCES[divergence]

    def d_loss(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return self.conjugate(fake_scores).mean() - self.activation(real_scores).mean()

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        return -self.activation(fake_scores).mean()

    def __repr__(self) -> str:
        return f"FGANLoss(divergence={self.divergence!r})"
