"""The model contract.

A model is a factory ``factory(*, z_dim=128, num_classes=0, width=1.0, channels=3, **options) -> GANPair``
(``width`` multiplies every channel count, so CPU runs can use narrow versions).

- ``generator.forward(z, y=None)`` maps ``z ~ N(0, I)`` of shape ``[B, z_dim]`` to images in
  ``[-1, 1]``, NCHW. The generator carries ``z_dim``, ``num_classes``, ``resolution`` and ``channels``.
- ``discriminator.forward(x, y=None)`` returns one raw score per sample, shape ``[B]``. It has no
  BatchNorm and no minibatch-std (GN needs per-sample gradients) and carries ``piecewise_linear``:
  True when every activation and pooling is piecewise linear, so GN's bound ‖∇ₓf̂‖ ≤ 1 holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class GANPair:
    """A generator and the discriminator it is trained against."""

    generator: nn.Module
    discriminator: nn.Module


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))
