"""Model ``biggan32``: class-conditional BigGAN for CIFAR-10 (Brock et al. 2019) as the GN-GAN authors ran it.

G: the ResNet generator with class-conditional BatchNorm and spectral norm (eps 1e-6, as the
release) on every conv and linear layer. D: optimized block + three residual blocks, ReLU, **sum**
pool, Linear + projection; no SN and no BN in D (GN constrains it). Every conv, linear and
embedding weight of G and D is xavier-uniform, biases 0 (the release's ``res32_weights_init``).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gn_plugin.models.base import GANPair, scaled
from gn_plugin.models.blocks import init_xavier_uniform_
from gn_plugin.models.resnet import ResNetDiscriminator, ResNetGenerator

RESOLUTION = 32
#: the eps of the release's ``partial(torch.nn.utils.spectral_norm, eps=1e-6)`` (PyTorch's default is 1e-12)
SPECTRAL_NORM_EPS = 1e-6


def spectrally_normalize_layers(module: nn.Module, eps: float = SPECTRAL_NORM_EPS) -> None:
    """Spectral norm on every conv and linear layer of ``module``, in place.

    The conditional-BN gain/bias embeddings stay plain, as in BigGAN's CIFAR configuration.
    """
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            spectral_norm(layer, eps=eps)


def biggan32(
    *, z_dim: int = 128, num_classes: int = 10, width: float = 1.0, channels: int = 3, activation: str = "relu"
) -> GANPair:
    """Model ``biggan32``: ch = 256 × width in G (4×4 → 32×32) and D (32 → 16 → 8 → 8 → 8).

    ``activation`` is D's (``relu``; the other names as for ``mlp``).
    """
    ch = scaled(256, width)
    generator = ResNetGenerator(z_dim, num_classes, channels, RESOLUTION, [ch] * 4, init=init_xavier_uniform_)
    spectrally_normalize_layers(generator)
    discriminator = ResNetDiscriminator(
        num_classes, channels, [ch] * 4, down_blocks=2, pool="sum", activation=activation, init=init_xavier_uniform_
    )
    return GANPair(generator, discriminator)
