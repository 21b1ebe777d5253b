"""Image datasets (entry-point group ``gn_plugin.datasets``)."""
