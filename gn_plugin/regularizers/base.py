"""The regularizer contract.

A regularizer is a factory ``factory(**options) -> Regularizer``; its weight comes from the options.
The object is called once per D step, and the runner adds its value to the D loss::

    penalty = regularizer(discriminator, real=..., fake=..., real_labels=..., fake_labels=...,
                          real_scores=...)

``discriminator`` is the norm's wrapper (the score the loss sees); ``real_scores`` are the wrapper's
scores of ``real`` from the D step, with their graph, for regularizers that can reuse them.

A regularizer that penalises the scores of an augmented view of the real batch may also declare
``augment(real) -> Tensor`` and ``from_scores(real_scores, view_scores) -> Tensor`` (the same value as
a call). When the norm declares ``per_sample_scores`` and every regularizer of the run has both, the
D step scores the views in its one pass over real and fake images (``train.fuse_consistency``).

A regularizer whose augmentation can mirror images declares ``mirror_symmetric`` (true until told
otherwise) and ``flips`` (whether its augmentation mirrors, for the run's log). Before the first step
the runner sets ``mirror_symmetric`` to the data set's own declaration
(:attr:`gn_plugin.data.base.ImageDataset.mirror_symmetric`), so that a regularizer left at its
default never mirrors images that are not mirror-symmetric, such as digits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor, nn


class Regularizer(Protocol):
    """A weighted penalty added to the discriminator loss."""

    weight: float

    def __call__(
        self,
        discriminator: nn.Module,
        *,
        real: Tensor,
        fake: Tensor,
        real_labels: Tensor | None = None,
        fake_labels: Tensor | None = None,
        real_scores: Tensor | None = None,
    ) -> Tensor: ...


def checked_weight(weight: float) -> float:
    """``weight`` if it is a finite number >= 0: a negative penalty would reward what it should punish."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
        raise ValueError(f"weight must be a number >= 0, got {weight!r}")
    return weight


def parse_hflip(hflip: object) -> str:
    """A regularizer's ``hflip`` option as ``auto``, ``on`` or ``off`` (YAML's true/false mean on/off)."""
    if isinstance(hflip, bool):
        return "on" if hflip else "off"
    if hflip not in ("auto", "on", "off"):
        raise ValueError(f"hflip must be auto, on or off, got {hflip!r}")
    return hflip


def declare_mirror_symmetry(regularizers: Iterable[object], mirror_symmetric: bool) -> None:
    """Tell every regularizer that declares ``mirror_symmetric`` whether the data set is mirror-symmetric."""
    for regularizer in regularizers:
        if hasattr(regularizer, "mirror_symmetric"):
            regularizer.mirror_symmetric = mirror_symmetric


def scores_views(regularizer: object) -> bool:
    """Whether ``regularizer`` declares ``augment`` and ``from_scores`` (it can join a fused D pass)."""
    return callable(getattr(regularizer, "augment", None)) and callable(getattr(regularizer, "from_scores", None))


def input_gradient_norms(discriminator: nn.Module, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(scores, ‖∇ₓ scores‖₂ per sample)``, with the graph kept for a penalty on them."""
    x = x.detach().requires_grad_(True)
    scores = discriminator(x) if y is None else discriminator(x, y)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return scores, grad.flatten(1).norm(p=2, dim=1)
