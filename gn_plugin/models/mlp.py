"""Model ``mlp``: a small fully-connected GAN sized for scikit-learn's 8×8 digits (the CPU default)."""

from __future__ import annotations

from torch import Tensor, nn

from gn_plugin.models.base import GANPair, scaled
from gn_plugin.models.blocks import (
    LabelConcat,
    ProjectionHead,
    activation_layer,
    is_piecewise_linear,
    labels_for,
)


class MLPGenerator(nn.Module):
    """z (+ label embedding) -> [Linear, BN, ReLU] × depth -> Linear -> tanh -> [B, C, R, R]."""

    def __init__(
        self, z_dim: int, num_classes: int, channels: int, resolution: int, hidden: int, depth: int, batchnorm: bool
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.channels, self.resolution = channels, resolution
        self.label_input = LabelConcat(z_dim, num_classes)
        layers: list[nn.Module] = []
        features = self.label_input.out_features
        for _ in range(depth):
            norm = nn.BatchNorm1d(hidden) if batchnorm else nn.Identity()
            layers += [nn.Linear(features, hidden), norm, nn.ReLU()]
            features = hidden
        layers += [nn.Linear(features, channels * resolution * resolution), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        y = labels_for(self, y)
        images = self.body(self.label_input(z, y))
        return images.view(-1, self.channels, self.resolution, self.resolution)


class MLPDiscriminator(nn.Module):
    """flatten -> [Linear, activation] × depth -> Linear (+ projection <Embed(y), h>) -> [B]."""

    def __init__(
        self, num_classes: int, channels: int, resolution: int, hidden: int, depth: int, activation: str
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.piecewise_linear = is_piecewise_linear(activation)
        layers: list[nn.Module] = [nn.Flatten()]
        features = channels * resolution * resolution
        for _ in range(depth):
            layers += [nn.Linear(features, hidden), activation_layer(activation, negative_slope=0.2)]
            features = hidden
        self.body = nn.Sequential(*layers)
        self.head = ProjectionHead(features, num_classes)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.body(x), labels_for(self, y))


def mlp(
    *,
    z_dim: int = 128,
    num_classes: int = 0,
    width: float = 1.0,
    channels: int = 1,
    resolution: int = 8,
    hidden: int = 256,
    depth: int = 3,
    activation: str = "leaky_relu",
    generator_batchnorm: bool = True,
) -> GANPair:
    """Model ``mlp``: ``depth`` hidden layers of ``hidden × width`` units in G and D.

    D uses ``activation`` (LeakyReLU(0.2) by default; ``relu`` is also piecewise linear; ``elu``,
    ``softplus``, ``softplus20`` (Softplus with β = 20) and ``gelu`` are smooth and void GN's bound).
    ``num_classes > 0`` makes it class-conditional: G appends a label embedding to z, D adds a
    projection term.
    ``generator_batchnorm=False`` drops G's BatchNorm (its statistics are per process under torchrun).
    """
    if depth < 0 or hidden < 1:
        raise ValueError(f"depth must be >= 0 and hidden >= 1, got depth={depth}, hidden={hidden}")
    units = scaled(hidden, width)
    return GANPair(
        MLPGenerator(z_dim, num_classes, channels, resolution, units, depth, generator_batchnorm),
        MLPDiscriminator(num_classes, channels, resolution, units, depth, activation),
    )
