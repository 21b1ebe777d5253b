"""Regularizer ``gp``: the WGAN-GP gradient penalty (Gulrajani et al., 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gn_plugin.regularizers.base import checked_weight, input_gradient_norms


class GradientPenalty:
    """weight · mean((‖∇ₓD(x̂)‖₂ − 1)²) on random interpolates x̂ = αx_real + (1−α)x_fake, α ~ U[0, 1].

    Conditional discriminators see the real labels at the interpolates.
    """

    def __init__(self, weight: float = 10.0) -> None:
        self.weight = checked_weight(weight)

    def __call__(
        self,
        discriminator: nn.Module,
        *,
        real: Tensor,
        fake: Tensor,
        real_labels: Tensor | None = None,
        fake_labels: Tensor | None = None,
        real_scores: Tensor | None = None,
    ) -> Tensor:
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        interpolates = alpha * real.detach() + (1 - alpha) * fake.detach()
        _, norms = input_gradient_norms(discriminator, interpolates, real_labels)
        return self.weight * ((norms - 1) ** 2).mean()

    def __repr__(self) -> str:
        return f"GradientPenalty(weight={self.weight})"
