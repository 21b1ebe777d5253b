"""TensorBoard: event files in the run directory's ``tensorboard/`` (on by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor


class TensorBoardLogger:
    """Scalars and sample grids as TensorBoard events in ``RUN_DIR/tensorboard``."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events an interrupted segment wrote after the checkpoint it resumes from
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, step: int, name: str, image: Tensor) -> None:
        self.writer.add_image(name, image, step)

    def close(self) -> None:
        self.writer.close()


def tensorboard(run_dir: Path, config: dict[str, Any], *, resume_step: int | None = None) -> TensorBoardLogger:
    """Logger ``tensorboard``: event files in the run directory's ``tensorboard/`` (``tensorboard --logdir runs``)."""
    return TensorBoardLogger(run_dir, resume_step)
