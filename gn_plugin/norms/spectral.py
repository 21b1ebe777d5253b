"""Norm ``sn``: spectral normalization (Miyato et al., 2018) of every conv, linear and embedding of D."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _parametrize_spectral_norm

from gn_plugin.norms.base import ScoreWrapper

SPECTRALLY_NORMALIZED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12) -> list[str]:
    """Divide every conv/linear/embedding weight in ``module`` by its largest singular value, in place.

    Uses PyTorch's parametrization (one power iteration per training forward by default). Adds no
    BatchNorm. Returns the names of the layers it wrapped.
    """
    wrapped = []
    for name, layer in module.named_modules():
        if isinstance(layer, SPECTRALLY_NORMALIZED) and not nn.utils.parametrize.is_parametrized(layer, "weight"):
            _parametrize_spectral_norm(layer, n_power_iterations=n_power_iterations, eps=eps)
            wrapped.append(name)
    return wrapped


def spectral_norm(discriminator: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12) -> ScoreWrapper:
    """Norm ``sn``: spectrally normalise every conv/linear/embedding weight of ``discriminator``."""
    apply_spectral_norm(discriminator, n_power_iterations=n_power_iterations, eps=eps)
    return ScoreWrapper(discriminator)
