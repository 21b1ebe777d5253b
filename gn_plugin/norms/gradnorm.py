"""Gradient normalization (Wu et al., ICCV 2021): f̂(x) = f(x) / (‖∇ₓ f(x)‖₂ + ζ(x)), ζ(x) = |f(x)|.

Use it in any training loop::

    from gn_plugin import GradNorm
    D = GradNorm(my_discriminator)
    loss = softplus(-D(real)).mean() + softplus(D(fake)).mean()   # D step; G step alike

``zeta`` chooses ζ(x) as in the paper's formulation ablation: ``abs`` (|f|, the paper's GN: |f̂| < 1
and, for a piecewise-linear D, ‖∇ₓf̂‖ ≤ 1), ``one`` (f̂ = f / (‖∇f‖ + 1): ‖∇ₓf̂‖ < 1, |f̂| unbounded)
and ``zero`` (f̂ = f / ‖∇f‖: ‖∇ₓf̂‖ = 1, |f̂| unbounded).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gn_plugin.errors import GnPluginError
from gn_plugin.norms.base import ScoreWrapper, raw_scores, require_per_sample
from gn_plugin.norms.gradnorm_exact import (
    cheap_discriminator_scores,
    cheap_generator_scores,
    is_piecewise_linear,
    supports_cheap_discriminator_step,
)
from gn_plugin.regularizers.consistency import ConsistencyRegularizer

#: the choices of ζ(x) in f̂ = f / (‖∇ₓf‖ + ζ(x)): |f| (the paper's GN), 1 and 0
ZETAS = ("abs", "one", "zero")


def normalize_gradient(
    discriminator: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    return_raw: bool = False,
    zeta: str = "abs",
) -> Tensor | tuple[Tensor, Tensor]:
    """Gradient-normalised score f̂ of ``discriminator`` at ``x`` (optionally with label ``y``), shape ``[B]``.

    The gradient is taken w.r.t. the image only, with ``create_graph=True`` so the loss
    back-propagates through ‖∇ₓf‖. Per-sample gradients come from the gradient of the batch sum,
    which is exact because the discriminator must not mix samples (no BatchNorm).
    With ``return_raw=True`` the raw score f is returned as well: ``(f̂, f)``. ``zeta``: see the module.

    Under ``torch.no_grad()`` (scoring images for evaluation) the input gradient GN needs is still
    taken, and the scores come back detached, as everything computed under ``no_grad``.
    ``torch.inference_mode()`` forbids any gradient, so there it is a one-line error.
    """
    if torch.is_inference_mode_enabled():
        raise GnPluginError(
            "GradNorm needs the gradient of D with respect to its input, which torch.inference_mode() forbids; "
            "score under torch.no_grad() instead"
        )
    building_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        scores = raw_scores(discriminator, x, y)
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=building_graph)
        normalized, _, _ = normalize_scores(scores, grad, zeta)
    if not building_graph:
        normalized, scores = normalized.detach(), scores.detach()
    return (normalized, scores.to(normalized.dtype)) if return_raw else normalized


def normalize_scores(scores: Tensor, grad: Tensor, zeta: str = "abs") -> tuple[Tensor, Tensor, Tensor]:
    """``(f̂, ‖∇ₓf‖, denominator)`` from the raw scores f and their input gradient ∇ₓf.

    The one place GN's formula is written; the exact cheap G and D steps are handed it too.
    """
    # Norm and division in at least float32, so autocast (bf16/fp16) never weakens the bound.
    precision = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(precision)
    grad_norm = grad.flatten(1).to(precision).norm(p=2, dim=1)
    if zeta == "abs":
        denominator = grad_norm + scores.abs()
    elif zeta == "one":
        denominator = grad_norm + 1
    else:
        denominator = grad_norm
    # The authors use no epsilon. The denominator is 0 only where ∇f = 0 and ζ = 0 (for ζ = |f|: f = 0
    # too, where f̂ = 0/1 = 0); there it is taken as 1, so f̂ = f stays finite and keeps its gradient
    # (ζ = 0 would divide by zero on a locally constant D). Everywhere else this is bit-for-bit the
    # authors' formula (tests/test_gradnorm.py checks both).
    safe_denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return scores / safe_denominator, grad_norm, safe_denominator


def score_slope(grad_norm: Tensor, denominator: Tensor, zeta: str = "abs") -> Tensor:
    """∂f̂/∂f with ‖∇ₓf‖ held fixed, from :func:`normalize_scores`' norm and denominator.

    Where the Hessian of f vanishes (a piecewise-linear D) ∇ₓ‖∇ₓf‖ = 0, so ∇ₓf̂ is this slope times
    ∇ₓf: ‖∇f‖/(‖∇f‖ + |f|)² for ζ = |f| (Theorem 6), 1/(‖∇f‖ + 1) for ζ = 1, 1/‖∇f‖ for ζ = 0.
    """
    if zeta == "abs":
        return grad_norm / denominator**2
    return 1 / denominator  # ζ = 1 or 0: the denominator does not depend on f


@dataclass(frozen=True)
class GradNormFormula:
    """GN's formula with one ζ, as the exact cheap steps are handed it: the scores and their slope."""

    zeta: str = "abs"

    def __call__(self, scores: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return normalize_scores(scores, grad, self.zeta)

    def slope(self, grad_norm: Tensor, denominator: Tensor) -> Tensor:
        return score_slope(grad_norm, denominator, self.zeta)


def check_zeta(zeta: str, norm: str = "gn") -> str:
    """``zeta`` when it is one of :data:`ZETAS`; otherwise a one-line error naming the norm."""
    if zeta not in ZETAS:
        raise GnPluginError(f"norm '{norm}': zeta must be one of {', '.join(ZETAS)}, got {zeta!r}")
    return zeta


def warn_if_not_piecewise_linear(discriminator: nn.Module) -> None:
    """Warn (once per process and model) when D declares itself not piecewise linear: GN's bound is void."""
    if getattr(discriminator, "piecewise_linear", None) is False:
        warnings.warn(
            f"GN: {type(discriminator).__name__} is not piecewise linear (a smooth activation), so GN's bound "
            "|grad f_hat| <= 1 no longer holds and the exact cheap steps are off",
            stacklevel=2,
        )


class GradNorm(ScoreWrapper):
    """Discriminator wrapper whose ``forward(x, y=None)`` returns the gradient-normalised score f̂.

    Declares the capabilities of :mod:`gn_plugin.norms.base`: per-sample scores, and exact cheap G and
    D steps where the wrapped discriminator is piecewise linear. ``zeta``: see the module.
    """

    per_sample_scores = True

    def __init__(self, discriminator: nn.Module, zeta: str = "abs", *, norm: str = "gn") -> None:
        require_per_sample(discriminator, norm)
        super().__init__(discriminator)
        self.formula = GradNormFormula(check_zeta(zeta, norm))
        warn_if_not_piecewise_linear(discriminator)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return normalize_gradient(self.discriminator, x, y, zeta=self.formula.zeta)  # type: ignore[return-value]

    def cheap_generator_scores(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """f̂ for the G step without double backprop (exact for a piecewise-linear D)."""
        return cheap_generator_scores(self.discriminator, x, y, self.formula)

    def cheap_discriminator_scores(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """f̂ for the D step in four passes instead of six (exact for a piecewise-linear D)."""
        return cheap_discriminator_scores(self.discriminator, x, y, self.formula)

    def cheap_step_problem(self, step: str) -> str | None:
        """Why a cheap step would not be exact for the wrapped discriminator, or None."""
        if step == "generator" and not is_piecewise_linear(self.discriminator):
            return "the discriminator is not piecewise linear, so the cheap step would be wrong"
        if step == "discriminator" and not supports_cheap_discriminator_step(self.discriminator):
            return "the discriminator is not piecewise linear with every parameter in a Conv2d or Linear layer"
        return None

    def extra_repr(self) -> str:
        return f"zeta={self.formula.zeta}"


def gradient_norm(discriminator: nn.Module, zeta: str = "abs") -> GradNorm:
    """Norm ``gn``: wrap ``discriminator`` with gradient normalization (``zeta``: abs, one or zero)."""
    return GradNorm(discriminator, zeta)


def gradient_norm_cr(
    discriminator: nn.Module, consistency_weight: float = 5.0, max_translation: float = 0.2, zeta: str = "abs",
    hflip: str | bool = "auto",
) -> GradNorm:
    """Norm ``gn-cr``: GN plus consistency regularization on real images (λ = 5 as the authors ran it).

    The term is mean((f̂(aug(x)) − f̂(x))²) with both sides gradient-normalised and neither detached;
    aug is a random horizontal flip then a random translation of up to ``max_translation`` of the
    image size, black fill (−1), batched on the device, drawn as the release draws them. The flip
    happens only on a mirror-symmetric data set (``hflip: auto``; ``on``/``off`` force it): digits
    get the translation alone. ``zeta`` as for ``gn``.
    """
    wrapper = GradNorm(discriminator, zeta, norm="gn-cr")
    wrapper.implied_regularizers = [
        ConsistencyRegularizer(weight=consistency_weight, max_translation=max_translation, hflip=hflip)
    ]
    return wrapper
