"""GN's exact cheap G and D steps for piecewise-linear discriminators.

For a piecewise-linear D the Hessian of f vanishes almost everywhere (Theorem 6's argument), so

- **G step**: ∇ₓf̂ is the gradient ∇ₓf scaled per sample by ∂f̂/∂f at fixed ‖∇ₓf‖ (the formula's
  ``slope``): ‖∇f‖ / (‖∇f‖ + |f|)² for GN's ζ = |f|, 1/(‖∇f‖ + ζ) for ζ = 1 or 0. The G step runs one
  plain forward/backward through D and rescales, with no double backprop; with the loss derivative
  taken at f̂ by autograd this is exact for any loss.
- **D step**: the D loss L depends on f̂ = f / (‖∇ₓf‖ + ζ), through f and ∇ₓf. Autograd's double backprop gets ∂L/∂θ from
  a forward pass, the backward for ∇ₓf (with its graph), and one backward through both graphs, which
  for every layer runs the forward graph's input and weight gradients and the gradient graph's
  tangent pass and weight gradients: six conv-sized passes where a plain D step has three. Two of
  them repeat work:

  - per sample, the forward graph's gradient at a layer's output is a·b, where a = ∂L/∂f and
    b = ∂f/∂out is what the backward for ∇ₓf already computed, so the forward graph need not be
    walked again;
  - the weight gradient is bilinear, so the forward graph's (layer input h, a·b) and the gradient
    graph's (tangent τ, b) make one call with input a·h + τ, where τ = ∂L/∂(the layer's share of ∇ₓf).

  That leaves forward, ∇ₓf, tangent pass and weight gradients: four passes. The first point holds
  for any D; the second drops the share of ∂‖∇ₓf‖/∂θ that goes through the slopes of the
  activations, which is zero almost everywhere for a piecewise-linear D. The D step cannot drop the
  second-order part altogether (∂‖∇ₓf‖/∂θ is not zero). Every parameter must sit in a ``Conv2d`` or
  ``Linear``, whose calls are routed through recording functions while D runs. A layer's parameter
  gradients are computed as soon as the tangent pass reaches it, which frees what it saved while the
  pass goes on.

Both steps give bit-identical scores and gradients equal to float rounding, for every ζ
(tests/test_gradnorm_exact_g_step.py, tests/test_gradnorm_exact_d_step.py). They take GN's formula as
an argument (:class:`Formula`, :class:`gn_plugin.norms.gradnorm.GradNormFormula`), so the formula is
written once: the D step differentiates it by autograd, the G step uses its slope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torch.overrides import TorchFunctionMode

from gn_plugin.errors import GnPluginError

from gn_plugin.norms.base import raw_scores


class Formula(Protocol):
    """GN's formula as the cheap steps need it (:class:`gn_plugin.norms.gradnorm.GradNormFormula`)."""

    def __call__(self, scores: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(f̂, ‖∇ₓf‖, denominator)`` from f and ∇ₓf."""

    def slope(self, grad_norm: Tensor, denominator: Tensor) -> Tensor:
        """∂f̂/∂f with ‖∇ₓf‖ held fixed."""


@dataclass(eq=False)
class _Layer:
    """One conv or linear call while D runs, and what the ∇ₓf pass and the tangent pass give for it."""

    input: Tensor | None  # None once the tangent pass has collected its gradients
    weight: nn.Parameter
    bias: nn.Parameter | None
    conv: tuple | None  # (stride, padding, dilation, groups) of a conv; None for a linear layer
    grad_output: Tensor | None = None  # b = ∂f/∂(layer output)
    tangent: Tensor | None = None  # τ = ∂L/∂(this layer's share of ∇ₓf)
    sink: _ParameterGradients | None = None  # where the tangent pass delivers this layer's ∂L/∂θ

    def input_gradient(self, grad_output: Tensor) -> Tensor:
        """The layer's share of ∂f/∂input: the call autograd itself makes, so ∇ₓf is bit-identical."""
        if self.conv is None:
            return grad_output.matmul(self.weight.detach())
        stride, padding, dilation, groups = self.conv
        return torch.ops.aten.convolution_backward(
            grad_output, self.input, self.weight.detach(), None, stride, padding, dilation,
            False, [0, 0], groups, [True, False, False],
        )[0]

    def tangent_output(self, tangent: Tensor) -> Tensor:
        """The tangent pass through the layer: its linear part (no bias) applied to ``tangent``."""
        if self.conv is None:
            return F.linear(tangent, self.weight.detach())
        return F.conv2d(tangent, self.weight.detach(), None, *self.conv)

    def parameter_gradients(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        """(∂L/∂weight, ∂L/∂bias) from a = ∂L/∂f per sample, the input, b and τ."""
        b = self.grad_output
        scale = a.to(b.dtype).view(-1, *[1] * (b.dim() - 1))
        tangent = self.tangent if self.tangent is not None else torch.zeros_like(self.input)
        combined = scale.to(self.input.dtype) * self.input + tangent
        scaled = scale * b
        if self.conv is None:
            weight = b.reshape(-1, b.shape[-1]).t().matmul(combined.reshape(-1, combined.shape[-1]))
            bias = scaled.reshape(-1, b.shape[-1]).sum(0)
        else:
            stride, padding, dilation, groups = self.conv
            weight = torch.ops.aten.convolution_backward(
                b, combined, self.weight.detach(), None, stride, padding, dilation,
                False, [0, 0], groups, [False, True, False],
            )[1]
            bias = scaled.sum(dim=(0, 2, 3))
        return weight, (bias if self.bias is not None else None)


class _LayerCall(torch.autograd.Function):
    """A layer's output with D's parameters held constant; its backward records b and goes through _InputGradient."""

    @staticmethod
    def forward(ctx, x: Tensor, layer: _Layer) -> Tensor:
        ctx.layer = layer
        weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
        return F.linear(x, weight, bias) if layer.conv is None else F.conv2d(x, weight, bias, *layer.conv)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        ctx.layer.grad_output = grad_output.detach()
        return _InputGradient.apply(grad_output, ctx.layer), None


class _InputGradient(torch.autograd.Function):
    """The layer's share of ∂f/∂input; differentiated, it records τ and runs the tangent pass only."""

    @staticmethod
    def forward(ctx, grad_output: Tensor, layer: _Layer) -> Tensor:
        ctx.layer = layer
        return layer.input_gradient(grad_output)

    @staticmethod
    def backward(ctx, tangent: Tensor):
        layer = ctx.layer
        output = layer.tangent_output(tangent)
        layer.tangent = tangent.detach()
        layer.sink.collect(layer)  # now, so that the layer's tensors are freed as the pass goes
        return output, None


class _ParameterGradients:
    """∂L/∂θ summed over the layer calls that use each parameter, given a = ∂L/∂f per sample."""

    def __init__(self, a: Tensor) -> None:
        self.a = a
        self.by_parameter: dict[int, Tensor] = {}

    def collect(self, layer: _Layer) -> None:
        """Add ``layer``'s weight and bias gradients, then drop what it held for them."""
        for parameter, value in zip((layer.weight, layer.bias), layer.parameter_gradients(self.a)):
            if parameter is not None:
                key = id(parameter)
                self.by_parameter[key] = self.by_parameter[key] + value if key in self.by_parameter else value
        layer.input = layer.grad_output = layer.tangent = layer.sink = None


def _conv_arguments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, (_pair(stride), _pair(padding), _pair(dilation), groups)


def _linear_arguments(input, weight, bias=None):
    return input, weight, bias


class _RecordLayers(TorchFunctionMode):
    """While active, ``conv2d`` and ``linear`` calls run as :class:`_LayerCall` and are listed in ``layers``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[_Layer] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            x, weight, bias, conv = _conv_arguments(*args, **kwargs)
        elif func is F.linear:
            (x, weight, bias), conv = _linear_arguments(*args, **kwargs), None
        else:
            return func(*args, **kwargs)
        layer = _Layer(x.detach(), weight, bias, conv)
        self.layers.append(layer)
        return _LayerCall.apply(x, layer)


class _PiecewiseLinearGradNormStep(torch.autograd.Function):
    """f̂(x) in the forward; in the backward, ∂L/∂θ of every parameter in four passes (module docstring)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, labels: Tensor | None, discriminator: nn.Module, formula: Formula, *parameters: nn.Parameter
    ) -> Tensor:
        recorder = _RecordLayers()
        with torch.enable_grad():
            inputs = x.detach().requires_grad_(True)
            with recorder:
                scores = raw_scores(discriminator, inputs, labels)
            seed = torch.ones_like(scores, requires_grad=True)  # every share of ∇ₓf depends on it
            (grad,) = torch.autograd.grad(scores, inputs, seed, create_graph=True)
        recorded = {id(p) for layer in recorder.layers for p in (layer.weight, layer.bias)}
        missing = [name for name, p in discriminator.named_parameters() if id(p) not in recorded]
        if missing:
            raise GnPluginError(f"cheap D step: parameters outside Conv2d/Linear layers: {', '.join(missing)}")
        ctx.layers, ctx.grad, ctx.seed, ctx.parameters = recorder.layers, grad, seed, parameters
        ctx.formula = formula
        ctx.save_for_backward(scores.detach(), grad.detach())
        return formula(scores.detach(), grad.detach())[0]

    @staticmethod
    def backward(ctx, upstream: Tensor):
        scores, grad = ctx.saved_tensors
        with torch.enable_grad():  # ∂L/∂f and ∂L/∂(∇ₓf) through the same formula as the forward
            scores, grad = scores.requires_grad_(True), grad.requires_grad_(True)
            a, grad_tangent = torch.autograd.grad(ctx.formula(scores, grad)[0], (scores, grad), upstream)
        sink = _ParameterGradients(a)
        for layer in ctx.layers:
            layer.sink = sink
        torch.autograd.grad(ctx.grad, ctx.seed, grad_tangent)  # the tangent pass: each layer collects its ∂L/∂θ
        for layer in ctx.layers:
            if layer.sink is not None:  # no tangent reached it
                sink.collect(layer)
        gradients = sink.by_parameter
        # ∂L/∂x = a·∇ₓf: the Hessian term vanishes for a piecewise-linear D (the cheap G step's formula)
        x_grad = a.to(grad.dtype).view(-1, *[1] * (grad.dim() - 1)) * grad if ctx.needs_input_grad[0] else None
        needed = ctx.needs_input_grad[4:]
        parameter_grads = [gradients[id(p)] if need else None for p, need in zip(ctx.parameters, needed)]
        del ctx.layers, ctx.grad, ctx.seed  # free the ∇ₓf graph now
        return (x_grad, None, None, None, *parameter_grads)


def _supported_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return isinstance(module, nn.Linear)


def is_piecewise_linear(discriminator: nn.Module) -> bool:
    """Whether the model declares every activation and pooling piecewise linear (the model contract)."""
    return bool(getattr(discriminator, "piecewise_linear", False))


def supports_cheap_discriminator_step(discriminator: nn.Module) -> bool:
    """Piecewise linear, and every parameter in a zero-padded ``Conv2d`` or a ``Linear``."""
    return is_piecewise_linear(discriminator) and all(
        _supported_layer(module) for module in discriminator.modules() if next(module.parameters(recurse=False), None) is not None
    )


def cheap_discriminator_scores(
    discriminator: nn.Module, images: Tensor, labels: Tensor | None, formula: Formula
) -> Tensor:
    """f̂ of ``images`` for the D loss, with the four-pass backward (exact for a piecewise-linear D)."""
    return _PiecewiseLinearGradNormStep.apply(images, labels, discriminator, formula, *discriminator.parameters())


class _PiecewiseLinearGradNorm(torch.autograd.Function):
    """f̂(x) in the forward; in the backward, the upstream gradient times the formula's slope times ∇f."""

    @staticmethod
    def forward(ctx, images: Tensor, discriminator: nn.Module, labels: Tensor | None, formula: Formula) -> Tensor:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            scores = raw_scores(discriminator, x, labels)
            (grad,) = torch.autograd.grad(scores.sum(), x)
        normalized, grad_norm, denominator = formula(scores.detach(), grad)
        ctx.save_for_backward(grad, formula.slope(grad_norm, denominator))
        return normalized

    @staticmethod
    def backward(ctx, upstream: Tensor):
        grad, scale = ctx.saved_tensors
        factor = (upstream * scale).to(grad.dtype).view(-1, *([1] * (grad.dim() - 1)))
        return factor * grad, None, None, None


def cheap_generator_scores(
    discriminator: nn.Module, fake: Tensor, labels: Tensor | None, formula: Formula
) -> Tensor:
    """f̂ of ``fake`` for the G loss, by one plain backward through D (exact for a piecewise-linear D)."""
    return _PiecewiseLinearGradNorm.apply(fake, discriminator, labels, formula)
