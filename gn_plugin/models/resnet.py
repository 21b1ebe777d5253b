"""Models ``resnet32/48/128/256``: SN-GAN ResNets (Miyato et al. 2018), D without BN and without SN.

Channel schedules follow the authors' release: G starts at ``resolution / 2^(up-blocks)`` and each
up-block doubles the size; D starts with the optimized block and its first ``down_blocks`` blocks
(the optimized one included) halve the size. ``num_classes > 0`` gives the conditional SN-GAN: class-conditional BN in G,
a projection term in D. Weights are ``kaiming_normal_`` with zero biases, as in the release.
"""

from __future__ import annotations

from typing import Callable, Literal

from torch import Tensor, nn

from gn_plugin.models.base import GANPair, scaled
from gn_plugin.models.blocks import (
    DownBlock,
    RESNET_LEAKY_SLOPE,
    OptimizedDownBlock,
    ProjectionHead,
    UpBlock,
    activation_layer,
    init_kaiming_normal_,
    is_piecewise_linear,
    labels_for,
)

Init = Callable[[nn.Module], None]

# resolution -> G channels (the first is the bottom feature map), D channels, D blocks that halve the size
_SCHEDULES: dict[int, tuple[list[int], list[int], int]] = {
    32: ([256, 256, 256, 256], [128, 128, 128, 128], 2),
    48: ([512, 256, 128, 64], [64, 128, 256, 512], 4),
    128: ([1024, 1024, 512, 256, 128, 64], [64, 128, 256, 512, 1024, 1024], 5),
    256: ([1024, 1024, 512, 512, 256, 128, 64], [64, 128, 256, 512, 512, 1024, 1024], 6),
}


class ResNetGenerator(nn.Module):
    """Linear(z → B·B·C₀) → up-blocks C₀→C₁→… → BN, ReLU, Conv3 → tanh."""

    def __init__(
        self, z_dim: int, num_classes: int, channels: int, resolution: int, widths: list[int],
        init: Init = init_kaiming_normal_,
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.channels, self.resolution = channels, resolution
        self.bottom = resolution // 2 ** (len(widths) - 1)
        self.linear = nn.Linear(z_dim, self.bottom * self.bottom * widths[0])
        self.blocks = nn.ModuleList(
            UpBlock(in_channels, out_channels, num_classes)
            for in_channels, out_channels in zip(widths, widths[1:])
        )
        self.output = nn.Sequential(
            nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], channels, 3, padding=1), nn.Tanh()
        )
        init(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        y = labels_for(self, y)
        h = self.linear(z).view(z.shape[0], -1, self.bottom, self.bottom)
        for block in self.blocks:
            h = block(h, y)
        return self.output(h)


class ResNetDiscriminator(nn.Module):
    """Optimized block, residual blocks, activation, global average (or sum) pool, Linear (+ projection).

    The activation is ReLU unless ``activation`` names another (LeakyReLU's slope is 0.2 here).
    """

    def __init__(
        self,
        num_classes: int,
        channels: int,
        widths: list[int],
        down_blocks: int,
        pool: Literal["mean", "sum"] = "mean",
        activation: str = "relu",
        init: Init = init_kaiming_normal_,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pool = pool
        # average or sum pooling, convs, linear layers and the projection are linear: the activation decides
        self.piecewise_linear = is_piecewise_linear(activation)
        blocks: list[nn.Module] = [OptimizedDownBlock(channels, widths[0], activation)]
        blocks += [
            DownBlock(in_channels, out_channels, down=index < down_blocks, activation=activation)
            for index, (in_channels, out_channels) in enumerate(zip(widths, widths[1:]), start=1)
        ]
        self.body = nn.Sequential(*blocks, activation_layer(activation, RESNET_LEAKY_SLOPE))
        self.head = ProjectionHead(widths[-1], num_classes)
        init(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = labels_for(self, y)
        features = self.body(x)
        pooled = features.sum(dim=(2, 3)) if self.pool == "sum" else features.mean(dim=(2, 3))
        return self.head(pooled, y)


def _resnet(resolution: int, z_dim: int, num_classes: int, width: float, channels: int, activation: str) -> GANPair:
    generator_widths, discriminator_widths, down_blocks = _SCHEDULES[resolution]
    generator_widths = [scaled(c, width) for c in generator_widths]
    discriminator_widths = [scaled(c, width) for c in discriminator_widths]
    return GANPair(
        ResNetGenerator(z_dim, num_classes, channels, resolution, generator_widths),
        ResNetDiscriminator(num_classes, channels, discriminator_widths, down_blocks, activation=activation),
    )


def resnet32(
    *, z_dim: int = 128, num_classes: int = 0, width: float = 1.0, channels: int = 3, activation: str = "relu"
) -> GANPair:
    """Model ``resnet32`` (CIFAR-10): G 4×4×256 + three up-blocks of 256; D 128 channels, 32→16→8.

    ``activation`` is D's (``relu``; also ``leaky_relu``, or a smooth one, as for ``mlp``), in every model here.
    """
    return _resnet(32, z_dim, num_classes, width, channels, activation)


def resnet48(
    *, z_dim: int = 128, num_classes: int = 0, width: float = 1.0, channels: int = 3, activation: str = "relu"
) -> GANPair:
    """Model ``resnet48`` (STL-10): G 6×6, 512→256→128→64; D 3→64→128→256→512, all down (48→3)."""
    return _resnet(48, z_dim, num_classes, width, channels, activation)


def resnet128(
    *, z_dim: int = 128, num_classes: int = 0, width: float = 1.0, channels: int = 3, activation: str = "relu"
) -> GANPair:
    """Model ``resnet128``: G 4×4×1024 → 1024→512→256→128→64; D 64→…→1024→1024, five down (128→4)."""
    return _resnet(128, z_dim, num_classes, width, channels, activation)


def resnet256(
    *, z_dim: int = 128, num_classes: int = 0, width: float = 1.0, channels: int = 3, activation: str = "relu"
) -> GANPair:
    """Model ``resnet256`` (CelebA-HQ, LSUN Church): G 4×4×1024 → … → 64; D 64→…→1024, six down (256→4)."""
    return _resnet(256, z_dim, num_classes, width, channels, activation)
