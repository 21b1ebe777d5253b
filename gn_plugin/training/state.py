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
    """A loss or a weight became NaN or infinite."""


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
    hflip: bool  # training flips the real images (data.hflip, resolved with the data set's mirror symmetry)
    cheap_generator_step: bool  # the norm's exact cheap G step (train.cheap_generator_step)
    cheap_discriminator_step: bool  # the norm's exact cheap D step (train.cheap_discriminator_step)
    fused_views: bool  # the regularizers' augmented views join the D step's one pass (train.fuse_consistency)
    captured_discriminator_step: CapturedStep | None  # the D step as a CUDA graph (train.cuda_graph)
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    first_nonfinite_step: Tensor | None = None  # on the device (no host sync per step): 0 while every loss is finite
    checkpoint_step: int | None = None  # step of checkpoints/latest.pt, which holds a finite state
    wall_time_s: float = 0.0  # training time of the run's earlier segments (a resumed run)

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes


def flag_nonfinite(t: Training, *losses: Tensor) -> None:
    """Remember on the device the first step (``t.step + 1``) at which any of ``losses`` is NaN or infinite."""
    bad = torch.stack([~torch.isfinite(loss) for loss in losses]).any()
    step = torch.where(bad, t.step + 1, 0)
    first = t.first_nonfinite_step
    t.first_nonfinite_step = step if first is None else torch.where(first > 0, first, step)


def state_tensors(t: Training) -> dict[str, list[Tensor]]:
    """The floating-point tensors a checkpoint holds, by part: weights, buffers and optimiser state."""
    def floats(tensors):
        return [x for x in tensors if isinstance(x, Tensor) and x.is_floating_point()]

    optimizer_state = lambda o: [x for state in o.state.values() for x in state.values()]  # noqa: E731
    return {
        "G's weights": floats(t.generator.state_dict().values()),
        "the EMA of G": floats(t.generator_ema.state_dict().values()),
        "D's weights": floats(t.discriminator.state_dict().values()),
        "G's optimiser state": floats(optimizer_state(t.optimizer_g)),
        "D's optimiser state": floats(optimizer_state(t.optimizer_d)),
    }


def check_finite(t: Training) -> None:
    """Stop with a one-line message when a loss went NaN/Inf or any weight or optimiser state is not finite.

    Called before anything reads the state (a checkpoint, an evaluation, a sample grid, a log line),
    so no checkpoint ever holds a diverged state. One host sync when all is well.
    """
    parts = state_tensors(t)
    finite = torch.stack([torch.isfinite(x).all() for tensors in parts.values() for x in tensors]).all()
    first_bad_loss = t.first_nonfinite_step
    if first_bad_loss is not None:
        finite = finite & (first_bad_loss == 0)
    if bool(finite):
        return
    bad_parts = [name for name, tensors in parts.items() if not all(bool(torch.isfinite(x).all()) for x in tensors)]
    if first_bad_loss is not None and int(first_bad_loss):
        what = f"a loss became NaN or infinite at step {int(first_bad_loss)}"
    else:
        what = f"{', '.join(bad_parts)} hold NaN or infinite values at step {t.step}"
    latest = t.files.latest_checkpoint
    kept = (
        f"the last finite checkpoint is {latest} (step {t.checkpoint_step})"
        if t.checkpoint_step is not None else "no checkpoint was written"
    )
    raise TrainingDiverged(f"training diverged: {what}; {kept} (try a lower learning rate or another norm)")
