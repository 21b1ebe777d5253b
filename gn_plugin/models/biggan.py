"""Model ``biggan32``: class-conditional BigGAN for CIFAR-10 (Brock et al. 2019) as the GN-GAN authors ran it.

G: the ResNet generator with class-conditional BatchNorm and spectral norm on every conv and linear
layer. D: optimized block + three residual blocks, ReLU, **sum** pool, Linear + projection; no SN
and no BN in D (GN constrains it).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gn_plugin.models.base import GANPair, scaled
from gn_plugin.models.resnet import ResNetDiscriminator, ResNetGenerator

RESOLUTION = 32


def spectrally_normalize_layers(module: nn.Module) -> None:
    """Spectral norm on every conv and linear layer of ``module``, in place.

    The conditional-BN gain/bias embeddings stay plain, as in BigGAN's CIFAR configuration.
    """
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            spectral_norm(layer)


def biggan32(
    *, z_dim: int = 128, num_classes: int = 10, width: float = 1.0, channels: int = 3
) -> GANPair:
    """Model ``biggan32``: ch = 256 × width in G (4×4 → 32×32) and D (32 → 16 → 8 → 8 → 8)."""
    ch = scaled(256, width)
    generator = ResNetGenerator(z_dim, num_classes, channels, RESOLUTION, [ch] * 4)
    spectrally_normalize_layers(generator)
    discriminator = ResNetDiscriminator(num_classes, channels, [ch] * 4, down_blocks=2, pool="sum")
    return GANPair(generator, discriminator)
