"""The logger contract: where a run's scalars and sample grids go besides its own files.

A logger is a factory registered in the entry-point group ``gn_plugin.loggers``::

    [project.entry-points."gn_plugin.loggers"]
    my-tracker = "my_package.loggers:my_tracker"

called as ``factory(run_dir, config, resume_step=..., **options)`` with the run directory (a
:class:`~pathlib.Path`, the place for the logger's own files), the run's resolved config as plain
data (to record as hyperparameters) and ``resume_step``: the step a resumed run continues from
(records of later steps, written before an interruption, are stale), or None when nothing is to be
dropped (``gnbench eval`` adding an evaluation). ``options`` are the ones ``train.loggers`` gives it
(``{name: wandb, project: my-project}``). The object it returns has three methods:

- ``log_scalars(step: int, scalars: dict[str, float])``: losses, learning rates, probes, speed
  every ``train.log_every`` steps, and each evaluation's metrics as ``eval_raw/fid``, ``eval_ema/fid``...;
- ``log_image(step: int, name: str, image: Tensor)``: a sample grid, RGB ``[3, H, W]`` in [0, 1];
- ``close()``: flush and finish, at the end of the run or when it stops.

A logger that fails to import, to start or to log is named in one line and switched off for the
rest of the run; the run itself goes on (its ``scalars.jsonl``, ``results.jsonl`` and ``samples/``
are written whatever the loggers do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from gn_plugin.errors import GnPluginError


class Logger(Protocol):
    """What a logger factory returns."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_image(self, step: int, name: str, image: Tensor) -> None: ...

    def close(self) -> None: ...


def image_array(image: Tensor) -> Any:
    """An RGB ``[3, H, W]`` tensor in [0, 1] as the ``[H, W, 3]`` uint8 array trackers take."""
    return (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data as dotted keys (``train.steps``), as trackers list hyperparameters."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def require_package(logger: str, module: str, extra: str) -> Any:
    """Import ``module`` for ``logger``; missing, it is a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise GnPluginError(
            f"logger '{logger}' needs the {module} package ({exc}): pip install 'gn-plugin[{extra}]'"
        ) from None


def stored_id(path: Path) -> str | None:
    """An id a logger kept in the run directory (the tracker's run to continue), if any."""
    return path.read_text().strip() or None if path.is_file() else None
