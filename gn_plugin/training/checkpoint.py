"""Checkpoints: a run's whole state, written atomically (temp file + rename), read with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gn_plugin.atomic import write_atomically
from gn_plugin.errors import GnPluginError
from gn_plugin.training.cuda_graph import make_capturable
from gn_plugin.training.state import Training, check_finite


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint so that a crash leaves either the old file or the new one, whole."""
    write_atomically(path, lambda file: torch.save(state, file))


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    if not path.is_file():
        raise GnPluginError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise GnPluginError(f"{path}: cannot read checkpoint: {type(exc).__name__}: {exc}") from None


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """The global RNG streams training draws from: the CPU's, and this GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(t: Training, path: Path) -> None:
    """Everything needed to resume exactly, written atomically."""
    check_finite(t)  # never overwrite a good checkpoint with a diverged state
    state = {
        "step": t.step,
        "generator": t.generator.state_dict(),
        "generator_ema": t.generator_ema.state_dict(),
        "discriminator": t.discriminator.state_dict(),
        "optimizer_g": t.optimizer_g.state_dict(),
        "optimizer_d": t.optimizer_d.state_dict(),
        "schedulers": [s.state_dict() for s in t.schedulers],
        "rng": rng_state(t.device),
        "data_position": t.stream.position,
        "best": t.best,
    }
    save_atomic(state, path)


def restore(t: Training, path: Path) -> None:
    """Load a checkpoint written by :func:`save_checkpoint` into ``t``."""
    state = load(path, map_location=t.device)
    t.generator.load_state_dict(state["generator"])
    t.generator_ema.load_state_dict(state["generator_ema"])
    t.discriminator.load_state_dict(state["discriminator"])
    t.optimizer_g.load_state_dict(state["optimizer_g"])
    t.optimizer_d.load_state_dict(state["optimizer_d"])
    if t.config.train.cuda_graph:
        make_capturable(t.optimizer_d, t.device)
    for scheduler, saved in zip(t.schedulers, state["schedulers"]):
        scheduler.load_state_dict(saved)
    torch.set_rng_state(state["rng"]["cpu"].cpu())
    if "cuda" in state["rng"] and t.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), t.device)
    t.stream.position = int(state["data_position"])
    t.step = int(state["step"])
    t.best = dict(state["best"])
