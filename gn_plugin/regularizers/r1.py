"""Regularizer ``r1``: the R1 penalty on real data (Mescheder et al., 2018)."""

from __future__ import annotations

from torch import Tensor, nn

from gn_plugin.regularizers.base import checked_weight, input_gradient_norms


class R1Penalty:
    """weight / 2 · mean(‖∇ₓD(x_real)‖₂²)."""

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
        _, norms = input_gradient_norms(discriminator, real, real_labels)
        return 0.5 * self.weight * (norms**2).mean()

    def __repr__(self) -> str:
        return f"R1Penalty(weight={self.weight})"
