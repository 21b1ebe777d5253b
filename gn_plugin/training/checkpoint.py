"""Checkpoints: a run's whole state, written atomically (temp file + rename), read with ``weights_only=True``.

A checkpoint carries a SHA-256 of its payload (every tensor's bytes, shape and dtype, and every plain
value), checked on load: PyTorch's zip reader does not verify its CRCs, so without it a file with
flipped bytes would load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gn_plugin.atomic import write_atomically
from gn_plugin.errors import GnPluginError, first_line
from gn_plugin.training.cuda_graph import make_capturable
from gn_plugin.training.state import Training, check_finite

CHECKSUM_KEY = "payload_sha256"
#: what :func:`save_checkpoint` writes, and :func:`restore` and ``gnbench eval``/``sample`` read
TRAINING_STATE = (
    "step", "generator", "generator_ema", "discriminator", "optimizer_g", "optimizer_d", "schedulers", "rng",
    "data_position", "best",
)


def _feed(value: Any, digest: Any) -> None:
    if isinstance(value, Tensor):
        data = value.detach().cpu().contiguous()
        digest.update(f"tensor {data.dtype} {tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}".encode())
        for item in value:
            _feed(item, digest)
    else:
        digest.update(f"{type(value).__name__} {value!r}".encode())


def payload_checksum(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's payload: every tensor's dtype, shape and bytes, every plain value."""
    digest = hashlib.sha256()
    _feed(state, digest)
    return digest.hexdigest()


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` with its checksum so that a crash leaves either the old file or the new one, whole.

    A failed write (full or read-only disk) is a one-line error; the previous file stays as it was.
    """
    stamped = {**state, CHECKSUM_KEY: payload_checksum(state)}
    try:
        write_atomically(path, lambda file: torch.save(stamped, file))
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as a RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise GnPluginError(f"cannot write checkpoint {path}: {reason}") from None


def load(path: Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = TRAINING_STATE) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check its checksum and its ``required`` entries."""
    if not path.is_file():
        raise GnPluginError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise GnPluginError(f"{path}: cannot read checkpoint: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(state, dict) or CHECKSUM_KEY not in state:
        raise GnPluginError(f"{path}: not a checkpoint written by gnbench (no payload checksum)")
    expected = state.pop(CHECKSUM_KEY)
    if payload_checksum(state) != expected:
        raise GnPluginError(f"{path}: checkpoint is corrupt (its payload does not match its checksum)")
    missing = [key for key in required if key not in state]
    if missing:
        raise GnPluginError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    return state


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """The global RNG streams training draws from: the CPU's, and this GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(t: Training, path: Path, wall_time_s: float) -> None:
    """Everything needed to resume exactly, written atomically; refuses a state that is not finite.

    ``wall_time_s`` is the run's training time so far, over all its segments.
    """
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
        "wall_time_s": wall_time_s,
    }
    save_atomic(state, path)
    if path == t.files.latest_checkpoint:
        t.checkpoint_step = t.step


def restore(t: Training, path: Path) -> None:
    """Load a checkpoint written by :func:`save_checkpoint` into ``t``; one that does not fit is a one-line error."""
    state = load(path, map_location=t.device)
    try:
        t.generator.load_state_dict(state["generator"])
        t.generator_ema.load_state_dict(state["generator_ema"])
        t.discriminator.load_state_dict(state["discriminator"])
        t.optimizer_g.load_state_dict(state["optimizer_g"])
        t.optimizer_d.load_state_dict(state["optimizer_d"])
        if t.config.train.cuda_graph:
            make_capturable(t.optimizer_d, t.device)
        if len(state["schedulers"]) != len(t.schedulers):
            raise ValueError(f"{len(state['schedulers'])} learning-rate schedules saved, {len(t.schedulers)} configured")
        for scheduler, saved in zip(t.schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if "cuda" in state["rng"] and t.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), t.device)
        t.stream.position = int(state["data_position"])
        t.step = int(state["step"])
        t.best = dict(state["best"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise GnPluginError(f"{path}: the checkpoint does not fit this run's config: {first_line(exc)}") from None
    t.checkpoint_step = t.step
    t.wall_time_s = float(state.get("wall_time_s", 0.0))
