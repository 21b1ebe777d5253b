"""Generator/discriminator pairs (entry-point group ``gn_plugin.models``)."""
