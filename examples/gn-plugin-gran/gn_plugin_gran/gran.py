"""Norm ``gran``: GraN, piecewise gradient normalization (Bhaskara et al., WACV 2022).

    ĝ(x) = K · f(x) · ‖∇ₓf(x)‖ / (‖∇ₓf(x)‖² + ε)

For a piecewise-linear D, ∇ₓf is constant on each linear piece, so on a piece
∇ₓĝ = K · ∇f · ‖∇f‖ / (‖∇f‖² + ε) and ‖∇ₓĝ‖ = K · ‖∇f‖² / (‖∇f‖² + ε) < K: ĝ is K-Lipschitz on
every piece ("piecewise K-Lipschitz"). Unlike GN's f̂ = f / (‖∇f‖ + |f|), ĝ is not bounded, and its
slope stays close to K wherever ‖∇f‖² ≫ ε instead of shrinking where |f| is large.

The formula is the one the paper defines, as restated in Su Jianlin's comparison of GN and GraN
(kexue.fm/archives/8757, 2021). The defaults K = 1 and ε = 1e-8 are this plugin's choice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gn_plugin.norms.base import ScoreWrapper, raw_scores, require_per_sample


class GraN(ScoreWrapper):
    """Discriminator wrapper whose ``forward(x, y=None)`` returns GraN's score ĝ, shape ``[B]``."""

    #: ĝ of a sample depends on that sample alone and scoring changes no state, so the runner may
    #: score real, fake and augmented views in one pass (a capability of gn_plugin.norms.base)
    per_sample_scores = True

    def __init__(self, discriminator: nn.Module, lipschitz: float = 1.0, eps: float = 1e-8) -> None:
        require_per_sample(discriminator, "gran")  # per-sample gradients come from the batch sum
        super().__init__(discriminator)
        self.lipschitz = lipschitz
        self.eps = eps

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        scores = raw_scores(self.discriminator, x, y)
        # create_graph: the loss back-propagates through ‖∇ₓf‖, in the D step and in the G step.
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
        precision = torch.promote_types(scores.dtype, torch.float32)
        grad_norm = grad.flatten(1).to(precision).norm(dim=1)
        return self.lipschitz * scores.to(precision) * grad_norm / (grad_norm**2 + self.eps)


def gran(discriminator: nn.Module, lipschitz: float = 1.0, eps: float = 1e-8) -> GraN:
    """Norm ``gran``: GraN with Lipschitz constant ``lipschitz`` (K) on every linear piece of D."""
    return GraN(discriminator, lipschitz=lipschitz, eps=eps)
