"""Models ``cnn32`` and ``cnn48``: the SN-GAN "standard CNN" (Miyato et al. 2018), init N(0, 0.02)."""

from __future__ import annotations

from torch import Tensor, nn

from gn_plugin.models.base import GANPair, scaled
from gn_plugin.models.blocks import (
    LabelConcat,
    ProjectionHead,
    activation_layer,
    init_normal_,
    is_piecewise_linear,
    labels_for,
)

# (out channels, kernel, stride) of D's convolutions (all padding 1), before the width multiplier
_DISCRIMINATOR_CONVS = [
    (64, 3, 1), (128, 4, 2), (128, 3, 1), (256, 4, 2), (256, 3, 1), (512, 4, 2), (512, 3, 1)
]  # fmt: skip
_GENERATOR_CHANNELS = [512, 256, 128, 64]


class CNNGenerator(nn.Module):
    """Linear(z → M·M·512) → [BN, ReLU, ConvT 4×4 s2] 512→256→128→64 → BN, ReLU, Conv3×3 → tanh."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, resolution: int, width: float) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.channels, self.resolution = channels, resolution
        widths = [scaled(c, width) for c in _GENERATOR_CHANNELS]
        self.bottom = resolution // 8
        self.label_input = LabelConcat(z_dim, num_classes)
        self.linear = nn.Linear(self.label_input.out_features, self.bottom * self.bottom * widths[0])
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip(widths, widths[1:]):
            layers += [
                nn.BatchNorm2d(in_channels),
                nn.ReLU(),
                nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
            ]
        layers += [
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(),
            nn.Conv2d(widths[-1], channels, 3, padding=1),
            nn.Tanh(),
        ]
        self.body = nn.Sequential(*layers)
        init_normal_(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        y = labels_for(self, y)
        h = self.linear(self.label_input(z, y))
        return self.body(h.view(z.shape[0], -1, self.bottom, self.bottom))


class CNNDiscriminator(nn.Module):
    """Seven convs, each followed by the activation (LeakyReLU(0.1)), then Linear((R/8)²·512 → 1)."""

    def __init__(
        self, num_classes: int, channels: int, resolution: int, width: float, activation: str
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.piecewise_linear = is_piecewise_linear(activation)
        layers: list[nn.Module] = []
        in_channels = channels
        for out_channels, kernel, stride in _DISCRIMINATOR_CONVS:
            out_channels = scaled(out_channels, width)
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1),
                activation_layer(activation, negative_slope=0.1),
            ]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        bottom = resolution // 8
        self.head = ProjectionHead(bottom * bottom * scaled(512, width), num_classes)
        init_normal_(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.body(x), labels_for(self, y))


def _standard_cnn(
    resolution: int, z_dim: int, num_classes: int, width: float, channels: int, activation: str
) -> GANPair:
    return GANPair(
        CNNGenerator(z_dim, num_classes, channels, resolution, width),
        CNNDiscriminator(num_classes, channels, resolution, width, activation),
    )


def cnn32(
    *,
    z_dim: int = 128,
    num_classes: int = 0,
    width: float = 1.0,
    channels: int = 3,
    activation: str = "leaky_relu",
) -> GANPair:
    """Model ``cnn32``: standard CNN for 32×32 images (CIFAR-10); D activation selectable as in ``mlp``."""
    return _standard_cnn(32, z_dim, num_classes, width, channels, activation)


def cnn48(
    *,
    z_dim: int = 128,
    num_classes: int = 0,
    width: float = 1.0,
    channels: int = 3,
    activation: str = "leaky_relu",
) -> GANPair:
    """Model ``cnn48``: standard CNN for 48×48 images (STL-10); D activation selectable as in ``mlp``."""
    return _standard_cnn(48, z_dim, num_classes, width, channels, activation)
