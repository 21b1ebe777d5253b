"""The runner: config, train, evaluate, bench, report and the ``gnbench`` CLI.

It reaches components only through :mod:`gn_plugin.registry`.
"""
