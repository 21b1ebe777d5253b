"""The norm contract shared by every discriminator wrapper.

A norm is a factory ``factory(discriminator: nn.Module, **options) -> nn.Module``. The wrapper it
returns has ``forward(x, y=None) -> Tensor`` of shape ``[B]`` (one score per sample) and is used in
both the D step and the G step. Wrappers built here also expose:

- ``discriminator``: the wrapped module, whose output is the *raw* score ``f(x)``;
- ``implied_regularizers``: regularizers the norm adds to the D loss (GN-CR's consistency term);
- ``piecewise_linear_generator_step``: whether the cheap exact G step may be used (GN only).

Third-party wrappers only need ``forward``; the runner falls back sensibly for the rest.
"""

from __future__ import annotations


from torch import Tensor, nn

from gn_plugin.errors import GnPluginError


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


