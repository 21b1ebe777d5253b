"""gn_plugin: Gradient Normalization for GANs (GN-GAN, ICCV 2021) as a plugin for a GAN benchmark.

Use GN in your own training loop::

    from gn_plugin import GradNorm
    D = GradNorm(discriminator)      # D(x, y=None) -> f̂, shape [B], |f̂| < 1
"""

from gn_plugin.errors import GnPluginError
from gn_plugin.norms.gradnorm import GradNorm, normalize_gradient
from gn_plugin.registry import create, get, list_components, register

__all__ = [
    "GnPluginError",
    "GradNorm",
    "create",
    "get",
    "list_components",
    "normalize_gradient",
    "register",
]
__version__ = "0.1.0"
