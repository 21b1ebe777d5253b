"""The generator's view of the discriminator, with GN's exact cheap G step.

For a piecewise-linear D the Hessian of f vanishes almost everywhere, so
∇ₓf̂ = ‖∇f‖ · ∇f / (‖∇f‖ + |f|)²: the gradient reaching the generator's output is ∇ₓf scaled per
sample. The G step can then run one plain forward/backward through D and rescale, with no double
backprop; with the loss derivative taken at f̂ by autograd this is exact for any loss. The D step
cannot drop the second-order part (∂‖∇ₓf‖/∂θ is not zero); its own cheap form, which keeps it, is in
:mod:`gn_plugin.runner.discriminator_step`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gn_plugin.errors import GnPluginError
from gn_plugin.norms.base import raw_scores, unwrap
from gn_plugin.norms.gradnorm import normalize_scores


class _PiecewiseLinearGradNorm(torch.autograd.Function):
    """f̂(x) in the forward; in the backward, the upstream gradient times ‖∇f‖∇f/(‖∇f‖+|f|)²."""

    @staticmethod
    def forward(ctx, images: Tensor, discriminator: nn.Module, labels: Tensor | None) -> Tensor:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            scores = raw_scores(discriminator, x, labels)
            (grad,) = torch.autograd.grad(scores.sum(), x)
        normalized, grad_norm, denominator = normalize_scores(scores.detach(), grad)
        ctx.save_for_backward(grad, grad_norm / denominator**2)
        return normalized

    @staticmethod
    def backward(ctx, upstream: Tensor):
        grad, scale = ctx.saved_tensors
        factor = (upstream * scale).to(grad.dtype).view(-1, *([1] * (grad.dim() - 1)))
        return factor * grad, None, None


def use_cheap_generator_step(config, wrapper: nn.Module) -> bool:
    """Whether ``train.cheap_generator_step`` (auto/on/off) applies to this norm and discriminator."""
    supported = getattr(wrapper, "piecewise_linear_generator_step", False)
    piecewise_linear = getattr(unwrap(wrapper), "piecewise_linear", False)
    choice = config.train.cheap_generator_step
    if choice == "on" and not supported:
        raise GnPluginError(f"train.cheap_generator_step: norm '{config.norm.name}' has no cheap generator step")
    if choice == "on" and not piecewise_linear:
        raise GnPluginError(
            "train.cheap_generator_step: the discriminator is not piecewise linear, so the cheap step would be wrong"
        )
    return choice != "off" and supported and piecewise_linear


def generator_scores(wrapper: nn.Module, fake: Tensor, labels: Tensor | None, *, cheap: bool) -> Tensor:
    """Scores of ``fake`` for the G loss: the wrapper's forward, or GN's exact cheap path."""
    if cheap:
        return _PiecewiseLinearGradNorm.apply(fake, unwrap(wrapper), labels)
    return wrapper(fake, labels)
