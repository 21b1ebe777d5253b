"""The norm contract shared by every discriminator wrapper.

A norm is a factory ``factory(discriminator: nn.Module, **options) -> nn.Module``. The wrapper it
returns has ``forward(x, y=None) -> Tensor`` of shape ``[B]`` (one score per sample) and is used in
both the D step and the G step. That is all a norm must provide; the runner falls back to the plain
path for everything else. A wrapper may also declare these capabilities:

- ``discriminator``: the wrapped module, whose output is the *raw* score ``f(x)`` (probes, plots).
- ``implied_regularizers``: regularizers the norm adds to the D loss (GN-CR's consistency term).
- ``per_sample_scores = True``: a sample's score depends on that sample alone and scoring changes no
  state, so scoring a concatenated batch equals scoring its parts. The D step then scores the real
  batch, the fake batch and the regularizers' augmented views in one pass. SN must not claim it:
  every training forward advances its power iteration.
- ``cheap_generator_scores(x, y=None)``: the same scores as ``forward``, with a backward that gives
  the G step exactly the gradients of ``forward`` by a cheaper path.
- ``cheap_discriminator_scores(x, y=None)``: likewise for the D step (gradients of D's parameters).
- ``cheap_step_problem(step) -> str | None``: why the cheap path of ``step`` (``"generator"`` or
  ``"discriminator"``) would not be exact for the wrapped discriminator, or None when it is.

GN (:mod:`gn_plugin.norms.gradnorm`) declares all of them; its cheap steps are exact only for a
piecewise-linear D (:mod:`gn_plugin.norms.gradnorm_exact`).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from gn_plugin.errors import GnPluginError

#: the two training steps a cheap path can serve, as ``cheap_<step>_scores`` names them
CHEAP_STEPS = ("generator", "discriminator")


def raw_scores(discriminator: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Call ``discriminator`` (with ``y`` only when given) and return one score per sample, ``[B]``."""
    out = discriminator(x) if y is None else discriminator(x, y)
    if out.numel() != x.shape[0]:
        raise GnPluginError(
            f"discriminator {type(discriminator).__name__} returned shape {tuple(out.shape)} for a "
            f"batch of {x.shape[0]}; a discriminator must return one score per sample"
        )
    return out.reshape(x.shape[0])


class ScoreWrapper(nn.Module):
    """A discriminator wrapper whose score is the wrapped module's raw score."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.implied_regularizers: list = []

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return raw_scores(self.discriminator, x, y)


def unwrap(wrapper: nn.Module) -> nn.Module:
    """The raw discriminator inside a wrapper (the wrapper itself when it exposes none)."""
    return getattr(wrapper, "discriminator", wrapper)


def has_per_sample_scores(wrapper: nn.Module) -> bool:
    """Whether the wrapper declares ``per_sample_scores`` (pure per-sample scores, no state change)."""
    return getattr(wrapper, "per_sample_scores", False) is True


def cheap_scorer(wrapper: nn.Module, step: str) -> Callable[..., Tensor] | None:
    """The wrapper's ``cheap_<step>_scores`` method, or None where it declares none."""
    if step not in CHEAP_STEPS:
        raise ValueError(f"step must be one of {CHEAP_STEPS}, got {step!r}")
    scorer = getattr(wrapper, f"cheap_{step}_scores", None)
    return scorer if callable(scorer) else None


def cheap_step_problem(wrapper: nn.Module, step: str) -> str | None:
    """The wrapper's own reason why its cheap path of ``step`` is not exact for its D, or None."""
    problem = getattr(wrapper, "cheap_step_problem", None)
    return problem(step) if callable(problem) else None


def uses_batch_statistics(module: nn.Module) -> list[str]:
    """Names of submodules that mix samples in a batch (BatchNorm and friends)."""
    mixing = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)
    return [name for name, m in module.named_modules() if isinstance(m, mixing)]


def require_per_sample(discriminator: nn.Module, norm: str) -> None:
    """Reject discriminators whose per-sample gradients cannot come from the batch sum."""
    offenders = uses_batch_statistics(discriminator)
    if offenders:
        raise GnPluginError(
            f"norm '{norm}' needs a discriminator without cross-sample layers, but "
            f"{type(discriminator).__name__} has BatchNorm at: {', '.join(offenders)}"
        )
