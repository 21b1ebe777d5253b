"""Discriminator wrappers (entry-point group ``gn_plugin.norms``): ``none``, ``sn``, ``gn``, ``gn-cr``."""
