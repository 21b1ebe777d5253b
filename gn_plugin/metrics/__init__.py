"""Sample-quality metrics (entry-point group ``gn_plugin.metrics``): ``fid``, ``kid``, ``is``, ``coverage``."""
