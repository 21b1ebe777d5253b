"""Sample-quality metrics (entry-point group ``gn_plugin.metrics``): ``fid``, ``kid``, ``is``, ``class_coverage``,
``precision``, ``recall``, ``density``, ``coverage``."""
