"""The files of one run directory: config, checkpoints, TensorBoard events, samples and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from gn_plugin.errors import GnPluginError


class RunFiles:
    """Paths and writers of a run directory; a non-writer (another process) writes nothing."""

    def __init__(self, root: Path, writer: bool = True) -> None:
        self.root = root
        self.writer = writer
        self._tensorboard = None

    config = property(lambda self: self.root / "config.yaml")
    checkpoints = property(lambda self: self.root / "checkpoints")
    latest_checkpoint = property(lambda self: self.checkpoints / "latest.pt")
    best_checkpoint = property(lambda self: self.checkpoints / "best.pt")
    results = property(lambda self: self.root / "results.jsonl")
    scalars = property(lambda self: self.root / "scalars.jsonl")
    summary = property(lambda self: self.root / "summary.json")
    samples = property(lambda self: self.root / "samples")

    def prepare(self, resume: bool) -> None:
        """Create the directory; refuse to start a new run over an existing one (nothing is overwritten)."""
        if resume:
            if not self.latest_checkpoint.is_file():
                raise GnPluginError(f"--resume: no checkpoint at {self.latest_checkpoint}")
        elif self.latest_checkpoint.exists() or self.results.exists():
            raise GnPluginError(f"run directory {self.root} already holds a run; pass --resume or choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)
        self.samples.mkdir(exist_ok=True)

    @property
    def tensorboard(self):
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.root / "tensorboard"))
        return self._tensorboard

    def log(self, line: str) -> None:
        """Print a line and keep it in ``log.txt``."""
        if not self.writer:
            return
        print(line, flush=True)
        with open(self.root / "log.txt", "a") as file:
            file.write(line + "\n")

    def _append_json(self, path: Path, record: dict[str, Any]) -> None:
        with open(path, "a") as file:
            file.write(json.dumps(record) + "\n")

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars to TensorBoard and ``scalars.jsonl``."""
        if not self.writer:
            return
        for name, value in scalars.items():
            self.tensorboard.add_scalar(name, value, step)
        self._append_json(self.scalars, {"step": step, **scalars})

    def add_image(self, step: int, grid: Tensor) -> None:
        """A sample grid (CHW in [0, 1]) to TensorBoard and ``samples/step_NNNNNNN.png``."""
        if not self.writer:
            return
        from torchvision.utils import save_image

        self.tensorboard.add_image("samples/raw_then_ema", grid, step)
        save_image(grid, self.samples / f"step_{step:07d}.png")

    def append_result(self, record: dict[str, Any]) -> None:
        """One evaluation as a JSON line in ``results.jsonl`` and as TensorBoard scalars."""
        if not self.writer:
            return
        self._append_json(self.results, record)
        for name, value in record.items():
            if isinstance(value, (int, float)) and name != "step":
                self.tensorboard.add_scalar(f"eval_{record['generator']}/{name}", value, record["step"])

    def read_results(self) -> list[dict[str, Any]]:
        """All evaluation records so far."""
        if not self.results.exists():
            return []
        return [json.loads(line) for line in self.results.read_text().splitlines() if line.strip()]

    def drop_after(self, step: int) -> None:
        """Forget records of steps after ``step`` (a resumed run recomputes them)."""
        if not self.writer:
            return
        for path in (self.results, self.scalars):
            if path.exists():
                kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
                temporary = path.with_suffix(".tmp")
                temporary.write_text("".join(line + "\n" for line in kept))
                temporary.replace(path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.writer:
            self.summary.write_text(json.dumps(summary, indent=2))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
