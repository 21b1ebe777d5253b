"""gn-plugin-gran: the GraN norm and f-GAN losses, plugged into gn_plugin through entry points."""

from gn_plugin_gran.fgan import FGANLoss
from gn_plugin_gran.gran import GraN, gran

__all__ = ["FGANLoss", "GraN", "gran"]
