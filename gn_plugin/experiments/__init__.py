"""Experiments of many runs: head-to-head benchmarks, the Lipschitz experiment, performance and smoke runs."""
