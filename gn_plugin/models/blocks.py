"""Building blocks shared by the architectures: activations, class conditioning, residual blocks, inits.

Everything used inside a discriminator here is per-sample (no BatchNorm) and, apart from the
optional smooth activations (``elu``, ``softplus``, ``softplus20``, ``gelu``), piecewise linear, so
GN's bound ‖∇ₓf̂‖ ≤ 1 holds for it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gn_plugin.errors import GnPluginError

# name -> (builder taking the LeakyReLU slope, piecewise linear?)
_ACTIVATIONS: dict[str, tuple[Callable[[float], nn.Module], bool]] = {
    "leaky_relu": (lambda slope: nn.LeakyReLU(slope), True),
    "relu": (lambda slope: nn.ReLU(), True),
    "elu": (lambda slope: nn.ELU(), False),
    "softplus": (lambda slope: nn.Softplus(), False),
    "softplus20": (lambda slope: nn.Softplus(beta=20.0), False),  # Softplus with β = 20: closer to ReLU
    "gelu": (lambda slope: nn.GELU(), False),
}

ACTIVATIONS = tuple(_ACTIVATIONS)
#: the LeakyReLU slope of ``activation: leaky_relu`` in the residual discriminators (ReLU by default)
RESNET_LEAKY_SLOPE = 0.2


def _activation_entry(name: str) -> tuple[Callable[[float], nn.Module], bool]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise GnPluginError(
            f"unknown discriminator activation '{name}' (choose one of: {', '.join(ACTIVATIONS)})"
        ) from None


def activation_layer(name: str, negative_slope: float) -> nn.Module:
    """The discriminator activation ``name``; ``negative_slope`` is used by ``leaky_relu`` only."""
    return _activation_entry(name)[0](negative_slope)


def is_piecewise_linear(name: str) -> bool:
    """Whether activation ``name`` is piecewise linear (GN's bound needs it)."""
    return _activation_entry(name)[1]


def labels_for(model: nn.Module, y: Tensor | None) -> Tensor | None:
    """``y`` for a class-conditional ``model`` (required); ``None`` for an unconditional one (ignores y)."""
    if model.num_classes == 0:
        return None
    if y is None:
        raise GnPluginError(
            f"{type(model).__name__} is class-conditional (num_classes={model.num_classes}); "
            "pass the labels y"
        )
    return y


class LabelConcat(nn.Module):
    """Appends a learned embedding of the label to z (identity for unconditional models)."""

    def __init__(self, z_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.out_features = 2 * z_dim if num_classes else z_dim

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        return z if self.embed is None else torch.cat([z, self.embed(y)], dim=1)


class ProjectionHead(nn.Module):
    """Score ``Linear(h) + <Embed(y), h>`` (Miyato & Koyama 2018); just ``Linear(h)`` unconditionally.

    Linear in ``h``, so it keeps a piecewise-linear discriminator piecewise linear.
    """

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        score = self.linear(h).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(y) * h).sum(dim=1)
        return score


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose per-channel gain ``1 + E_g(y)`` and bias ``E_b(y)`` come from class embeddings.

    With ``num_classes == 0`` it is a plain affine BatchNorm2d and ignores ``y``.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.batch_norm = nn.BatchNorm2d(channels, affine=num_classes == 0)
        self.gain = nn.Embedding(num_classes, channels) if num_classes else None
        self.bias = nn.Embedding(num_classes, channels) if num_classes else None

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.batch_norm(x)
        if self.gain is None:
            return h
        return h * (1 + self.gain(y)[:, :, None, None]) + self.bias(y)[:, :, None, None]


class UpBlock(nn.Module):
    """Generator residual block: BN-ReLU-Up-Conv3-BN-ReLU-Conv3, shortcut Up-Conv1 (nearest upsampling)."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int = 0) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ConditionalBatchNorm2d(out_channels, num_classes)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """Discriminator residual block: act-Conv3-act-Conv3 [-AvgPool2]; shortcut Conv1 [-AvgPool2].

    ``act`` is ReLU unless ``activation`` names another. The shortcut is a 1×1 conv only when the
    channels change or the block down-samples, else identity.
    """

    def __init__(self, in_channels: int, out_channels: int, down: bool, activation: str = "relu") -> None:
        super().__init__()
        pool: list[nn.Module] = [nn.AvgPool2d(2)] if down else []
        self.residual = nn.Sequential(
            activation_layer(activation, RESNET_LEAKY_SLOPE),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            activation_layer(activation, RESNET_LEAKY_SLOPE),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            *pool,
        )
        learnable = down or in_channels != out_channels
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), *pool) if learnable else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class OptimizedDownBlock(nn.Module):
    """First discriminator block (SN-GAN): Conv3-act-Conv3-AvgPool2; shortcut AvgPool2-Conv1.

    No activation on the input image, which is why it differs from :class:`DownBlock`.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: str = "relu") -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            activation_layer(activation, RESNET_LEAKY_SLOPE),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.AvgPool2d(2),
        )
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


_WEIGHTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """Weights of every linear, conv and embedding ~ N(0, std²), biases 0 (BatchNorm left at 1, 0)."""
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.normal_(layer.weight, 0.0, std)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)


def init_xavier_uniform_(module: nn.Module) -> None:
    """Xavier-uniform weights of every linear, conv and embedding, biases 0 (as the authors' BigGAN)."""
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.xavier_uniform_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)


def init_kaiming_normal_(module: nn.Module) -> None:
    """``kaiming_normal_`` weights (std √(2 / fan_in)) of every linear and conv, biases 0 (the authors' ResNets).

    Embeddings (class-conditional BN gains and projections, which the authors' ResNets do not have)
    are xavier-uniform, as in their BigGAN.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Embedding):
            nn.init.xavier_uniform_(layer.weight)
        elif isinstance(layer, _WEIGHTED):
            nn.init.kaiming_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
