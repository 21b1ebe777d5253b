"""gn_plugin: Gradient Normalization for GANs (GN-GAN, ICCV 2021) as a plugin for a GAN benchmark.

Use GN in your own training loop::

    from gn_plugin import GradNorm
    D = GradNorm(discriminator)      # D(x, y=None) -> f̂, shape [B], |f̂| < 1

Open a trained run in a notebook::

    import gn_plugin
    run = gn_plugin.load_run("runs/digits-gn")
    images = gn_plugin.sample(run, 64)      # [64, C, H, W] in [-1, 1]
"""

from __future__ import annotations

import importlib
from typing import Any

from gn_plugin.errors import GnPluginError
from gn_plugin.registry import create, get, list_components, register

#: names imported on first use, so that ``import gn_plugin`` (and the ``gnbench`` command) does not load torch
_LAZY = {
    "GradNorm": "gn_plugin.norms.gradnorm",
    "normalize_gradient": "gn_plugin.norms.gradnorm",
    "load_run": "gn_plugin.api",
    "sample": "gn_plugin.api",
    "interpolate": "gn_plugin.api",
    "latents": "gn_plugin.api",
}

__all__ = [
    "GnPluginError",
    "GradNorm",
    "create",
    "get",
    "interpolate",
    "latents",
    "list_components",
    "load_run",
    "normalize_gradient",
    "register",
    "sample",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gn_plugin' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
