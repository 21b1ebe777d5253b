"""Comparing the weights two run directories ended with, and reading a checkpoint's step (shared by the resume tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from gn_plugin.training import checkpoint
from gn_plugin.training.run_dir import RunFiles


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the latest checkpoint's generator, EMA generator and discriminator, by name."""
    state = checkpoint.load(RunFiles(run_dir).latest_checkpoint)
    return {f"{part}.{k}": v for part in ("generator", "generator_ema", "discriminator") for k, v in state[part].items()}


def assert_same_weights(a: Path, b: Path) -> None:
    """The two runs' latest checkpoints hold the same tensors, bit for bit."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's latest checkpoint (None: it has none)."""
    path = RunFiles(run_dir).latest_checkpoint
    return int(checkpoint.load(path)["step"]) if path.is_file() else None
