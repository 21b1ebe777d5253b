"""The run's loggers (``train.loggers``), created through the registry; one that fails is switched off, never the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from gn_plugin.config import ComponentSpec
from gn_plugin.errors import GnPluginError, first_line
from gn_plugin.registry import create


class Loggers:
    """Every configured logger, called in turn; a failure (at import, start or any call) is reported in one
    line naming the logger, which is then left out for the rest of the run."""

    def __init__(
        self, specs: list[ComponentSpec], run_dir: Path, config: dict[str, Any], *, resume_step: int | None,
        report: Callable[[str], None] = print,
    ) -> None:
        self.report = report
        self.active: dict[str, Any] = {}
        for spec in specs:
            try:
                self.active[spec.name] = create(
                    "logger", spec.name, run_dir, config, resume_step=resume_step, **spec.options
                )
            except (Exception, SystemExit) as exc:  # a tracker that cannot start must not stop the run
                self.fail(spec.name, exc)

    def fail(self, name: str, exc: BaseException) -> None:
        self.active.pop(name, None)
        reason = first_line(exc) if isinstance(exc, GnPluginError) else f"{type(exc).__name__}: {first_line(exc)}"
        self.report(f"logger '{name}' is off for the rest of the run: {reason}")

    def call(self, method: str, *args: Any) -> None:
        for name, logger in list(self.active.items()):
            try:
                getattr(logger, method)(*args)
            except (Exception, SystemExit) as exc:
                self.fail(name, exc)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.call("log_scalars", step, scalars)

    def log_image(self, step: int, name: str, image: Tensor) -> None:
        self.call("log_image", step, name, image)

    def close(self) -> None:
        self.call("close")
        self.active.clear()
