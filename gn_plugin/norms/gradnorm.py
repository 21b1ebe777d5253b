"""Gradient normalization (Wu et al., ICCV 2021): f̂(x) = f(x) / (‖∇ₓ f(x)‖₂ + |f(x)|).

Use it in any training loop::

    from gn_plugin import GradNorm
    D = GradNorm(my_discriminator)
    loss = softplus(-D(real)).mean() + softplus(D(fake)).mean()   # D step; G step alike
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gn_plugin.norms.base import ScoreWrapper, raw_scores, require_per_sample
from gn_plugin.norms.gradnorm_exact import (
    cheap_discriminator_scores,
    cheap_generator_scores,
    is_piecewise_linear,
    supports_cheap_discriminator_step,
)
from gn_plugin.regularizers.consistency import ConsistencyRegularizer


def normalize_gradient(
    discriminator: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    return_raw: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Gradient-normalised score f̂ of ``discriminator`` at ``x`` (optionally with label ``y``), shape ``[B]``.

    The gradient is taken w.r.t. the image only, with ``create_graph=True`` so the loss
    back-propagates through ‖∇ₓf‖. Per-sample gradients come from the gradient of the batch sum,
    which is exact because the discriminator must not mix samples (no BatchNorm).
    With ``return_raw=True`` the raw score f is returned as well: ``(f̂, f)``.
    """
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    scores = raw_scores(discriminator, x, y)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    normalized, _, _ = normalize_scores(scores, grad)
    return (normalized, scores.to(normalized.dtype)) if return_raw else normalized


def normalize_scores(scores: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(f̂, ‖∇ₓf‖, denominator)`` from the raw scores f and their input gradient ∇ₓf.

    The one place GN's formula is written; the exact cheap G and D steps are handed it too.
    """
    # Norm and division in at least float32, so autocast (bf16/fp16) never weakens the bound.
    precision = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(precision)
    grad_norm = grad.flatten(1).to(precision).norm(p=2, dim=1)
    denominator = grad_norm + scores.abs()
    # The authors use no epsilon. The denominator is 0 only where f = 0 and ∇f = 0, where f̂ = 0/1 = 0;
    # everywhere else this is bit-for-bit the authors' formula (tests/test_gradnorm.py checks both).
    safe_denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return scores / safe_denominator, grad_norm, safe_denominator


class GradNorm(ScoreWrapper):
    """Discriminator wrapper whose ``forward(x, y=None)`` returns the gradient-normalised score f̂.

    Declares the capabilities of :mod:`gn_plugin.norms.base`: per-sample scores, and exact cheap G and
    D steps where the wrapped discriminator is piecewise linear.
    """

    per_sample_scores = True

    def __init__(self, discriminator: nn.Module) -> None:
        require_per_sample(discriminator, "gn")
        super().__init__(discriminator)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return normalize_gradient(self.discriminator, x, y)  # type: ignore[return-value]

    def cheap_generator_scores(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """f̂ for the G step without double backprop (exact for a piecewise-linear D)."""
        return cheap_generator_scores(self.discriminator, x, y, normalize_scores)

    def cheap_discriminator_scores(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """f̂ for the D step in four passes instead of six (exact for a piecewise-linear D)."""
        return cheap_discriminator_scores(self.discriminator, x, y, normalize_scores)

    def cheap_step_problem(self, step: str) -> str | None:
        """Why a cheap step would not be exact for the wrapped discriminator, or None."""
        if step == "generator" and not is_piecewise_linear(self.discriminator):
            return "the discriminator is not piecewise linear, so the cheap step would be wrong"
        if step == "discriminator" and not supports_cheap_discriminator_step(self.discriminator):
            return "the discriminator is not piecewise linear with every parameter in a Conv2d or Linear layer"
        return None


def gradient_norm(discriminator: nn.Module) -> GradNorm:
    """Norm ``gn``: wrap ``discriminator`` with gradient normalization."""
    return GradNorm(discriminator)


def gradient_norm_cr(
    discriminator: nn.Module, consistency_weight: float = 5.0, max_translation: float = 0.2
) -> GradNorm:
    """Norm ``gn-cr``: GN plus consistency regularization on real images (λ = 5 as the authors ran it).

    The term is mean((f̂(aug(x)) − f̂(x))²) with both sides gradient-normalised and neither detached;
    aug is a random horizontal flip then a random translation of up to ``max_translation`` of the
    image size, black fill (−1), batched on the device, drawn as the release draws them.
    """
    wrapper = GradNorm(discriminator)
    wrapper.implied_regularizers = [
        ConsistencyRegularizer(weight=consistency_weight, max_translation=max_translation)
    ]
    return wrapper
