"""Regularizers added to the D loss (entry-point group ``gn_plugin.regularizers``): ``gp``, ``cr``, ``r1``."""
