"""What one training run holds (:class:`Training`, the one object passed down) and its divergence check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gn_plugin.config import Config
from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.training.cuda_graph import CapturedStep
from gn_plugin.training.data_stream import BatchStream
from gn_plugin.training.distributed import ProcessGroup
from gn_plugin.training.run_dir import RunFiles


class TrainingDiverged(GnPluginError):
    """A loss became NaN or infinite."""


@dataclass
class Training:
    """Everything one training run holds: the config, models, optimisers, data and progress."""

    config: Config
    files: RunFiles
    group: ProcessGroup
    device: torch.device
    dataset: ImageDataset
    generator: nn.Module
    generator_ema: nn.Module
    discriminator: nn.Module  # the norm's wrapper; its `.discriminator` is the raw D
    loss: Any
    regularizers: dict[str, Any]
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]
    stream: BatchStream
    cheap_generator_step: bool  # the norm's exact cheap G step (train.cheap_generator_step)
    cheap_discriminator_step: bool  # the norm's exact cheap D step (train.cheap_discriminator_step)
    fused_views: bool  # the regularizers' augmented views join the D step's one pass (train.fuse_consistency)
    captured_discriminator_step: CapturedStep | None  # the D step as a CUDA graph (train.cuda_graph)
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    nonfinite: Tensor | None = None  # device-side flag: no host sync per step

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes


def flag_nonfinite(t: Training, *losses: Tensor) -> None:
    """Remember on the device whether any of ``losses`` is NaN or infinite."""
    bad = torch.stack([~torch.isfinite(loss) for loss in losses]).any()
    t.nonfinite = bad if t.nonfinite is None else t.nonfinite | bad


def check_finite(t: Training) -> None:
    """Stop with a clear message when a loss went NaN/Inf since the last check (one host sync)."""
    if t.nonfinite is not None and bool(t.nonfinite):
        latest = t.files.latest_checkpoint
        kept = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged before step {t.step}: a loss became NaN or infinite; {kept} "
            "(try a lower learning rate or another norm)"
        )
