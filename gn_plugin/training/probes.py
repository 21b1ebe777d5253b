"""Probes of the discriminator logged while training: score statistics and empirical Lipschitz constants."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gn_plugin.norms.base import raw_scores, unwrap
from gn_plugin.training.state import Training
from gn_plugin.training.steps import DiscriminatorStep


def input_gradient_norms(module: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """Per-sample ‖∇ₓ module(x)‖₂: an empirical Lipschitz probe."""
    x = x.detach().requires_grad_(True)
    scores = raw_scores(module, x, y)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad.flatten(1).norm(dim=1)


def probe_discriminator(t: Training, step: DiscriminatorStep) -> dict[str, float]:
    """Raw and normalised score statistics and Lipschitz probes on real, fake and interpolated points.

    D runs in eval mode so the probe never advances SN's power iteration.
    """
    real, fake, labels = step.real, step.fake, step.real_labels
    alpha = torch.rand(len(real), 1, 1, 1, device=t.device)
    points = torch.cat([real, fake, alpha * real + (1 - alpha) * fake])
    point_labels = None if labels is None else torch.cat([labels, step.fake_labels, labels])
    t.discriminator.eval()
    try:
        effective = input_gradient_norms(t.discriminator, points, point_labels)
        raw = input_gradient_norms(unwrap(t.discriminator), points, point_labels)
        with torch.no_grad():
            raw_real = raw_scores(unwrap(t.discriminator), real, labels)
            raw_fake = raw_scores(unwrap(t.discriminator), fake, step.fake_labels)
    finally:
        t.discriminator.train()
    stats = {
        "lipschitz/grad_norm_mean": effective.mean(), "lipschitz/grad_norm_max": effective.max(),
        "lipschitz/raw_grad_norm_mean": raw.mean(), "lipschitz/raw_grad_norm_max": raw.max(),
        "scores/real_mean": step.real_scores.mean(), "scores/real_std": step.real_scores.std(),
        "scores/fake_mean": step.fake_scores.mean(), "scores/fake_std": step.fake_scores.std(),
        "scores_raw/real_mean": raw_real.mean(), "scores_raw/real_std": raw_real.std(),
        "scores_raw/fake_mean": raw_fake.mean(), "scores_raw/fake_std": raw_fake.std(),
    }
    return {name: float(value) for name, value in stats.items()}
