"""Weights & Biases (``pip install 'gn-plugin[wandb]'``): one W&B run per run directory."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from torch import Tensor

from gn_plugin.atomic import write_atomically
from gn_plugin.loggers.base import image_array, require_package, stored_id

#: the W&B run id of a run directory, kept so that a resumed run continues the same W&B run
RUN_ID_FILE = "wandb-run-id"


class WandbLogger:
    """Scalars and sample grids logged to a W&B run (``wandb.init``'s files under ``RUN_DIR/wandb``)."""

    def __init__(self, run: Any, wandb: Any) -> None:
        self.run, self.wandb = run, wandb

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_image(self, step: int, name: str, image: Tensor) -> None:
        self.run.log({name: self.wandb.Image(image_array(image))}, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_logger(
    run_dir: Path,
    config: dict[str, Any],
    *,
    resume_step: int | None = None,
    project: str = "gn_plugin",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
) -> WandbLogger:
    """Logger ``wandb``: a Weights & Biases run in ``project`` (``entity``), named ``name`` (default: the run
    directory's name), continued when the run resumes; ``mode`` offline or online (default: ``WANDB_MODE``)."""
    wandb = require_package("wandb", "wandb", "wandb")
    id_file = run_dir / RUN_ID_FILE
    run_id = stored_id(id_file) or uuid.uuid4().hex[:16]
    if not id_file.is_file():
        write_atomically(id_file, lambda file: file.write(run_id.encode()))
    run = wandb.init(
        project=project, entity=entity, name=name or run_dir.name, group=group, tags=tags, mode=mode,
        dir=str(run_dir), id=run_id, resume="allow", config=config, settings=wandb.Settings(console="off", quiet=True),
    )
    return WandbLogger(run, wandb)
