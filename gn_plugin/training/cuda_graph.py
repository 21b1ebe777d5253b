"""CUDA-graph capture of the D step (``train.cuda_graph``).

A D step has the same shapes every time, so after a few eager warm-up steps it is captured once as a
CUDA graph and then replayed: one launch instead of hundreds of small kernel launches, which is
where a 32 px GAN step spends much of its time on a fast GPU. GN's double backprop is ordinary
kernels on the capturing stream, so the whole step (G's forward for the fakes, the augmentations,
D with GN, the loss, both backward passes and Adam's update) is one graph. What capture needs, and
where it comes from:

- fixed input addresses: the real batch is copied into the graph's own buffers before each replay;
- graph-safe random numbers: every draw in the step (z, labels, flips, CR's augmentation, GP's α)
  uses the default CUDA generator, whose Philox offset the graph advances on each replay;
- an optimiser that updates on the device: Adam with ``capturable=True`` and its learning rate held
  as a tensor, so the lr schedule reaches the captured update (:func:`make_capturable`);
- no host syncs in the step (``tests/test_perf.py`` checks the step's ops for them) and autocast
  without its weight cache;
- one process: the gradient all-reduce is not captured.

Only D's update is captured; the G step, EMA, logging and evaluation run eagerly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from gn_plugin.errors import GnPluginError

#: eager D steps before capture (cuDNN's algorithm choice, Adam's state, the allocator settle first)
WARMUP_STEPS = 3
T = TypeVar("T")


def check_cuda_graph(device: torch.device, world_size: int) -> None:
    """One-line errors for a ``train.cuda_graph`` run that cannot capture."""
    if device.type != "cuda":
        raise GnPluginError(f"train.cuda_graph: needs a CUDA device, and this run trains on '{device}'")
    if world_size > 1:
        raise GnPluginError(
            f"train.cuda_graph: supports one process, and this run has {world_size} "
            "(the gradient all-reduce is not captured)"
        )


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Switch an Adam-style optimiser to on-device updates: ``capturable``, a tensor lr, step counts on ``device``.

    Also applied after a checkpoint is loaded, which brings back the saved (possibly float) settings.
    """
    for group in optimizer.param_groups:
        group["capturable"] = True
        if not isinstance(group["lr"], Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
    for state in optimizer.state.values():
        if "step" in state:
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


class CapturedStep:
    """``captured(step, *inputs)``: ``step(*inputs)`` run eagerly for :data:`WARMUP_STEPS` calls, then
    captured once and replayed.

    ``inputs`` are tensors of fixed shape (or None); each call's values are copied into the graph's
    buffers. The returned value holds the graph's output tensors: read them before the next call.
    ``step`` must be the same function at every call (it is captured once).
    """

    def __init__(self, device: torch.device, warmup_steps: int = WARMUP_STEPS) -> None:
        self.device, self.warmup_steps = device, warmup_steps
        self.eager_calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[Tensor | None, ...] = ()
        self.static_outputs: Any = None

    def __call__(self, step: Callable[..., T], *inputs: Tensor | None) -> T:
        if self.graph is None and self.eager_calls < self.warmup_steps:
            self.eager_calls += 1
            return self._run_on_side_stream(step, inputs)
        if self.graph is None:
            self._capture(step, inputs)
        else:
            for static, value in zip(self.static_inputs, inputs):
                if static is not None:
                    static.copy_(value)
        self.graph.replay()
        return self.static_outputs

    def _run_on_side_stream(self, step: Callable[..., T], inputs: tuple[Tensor | None, ...]) -> T:
        # PyTorch's recipe for whole-step capture: warm up on a side stream, not the default one
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            outputs = step(*inputs)
        main.wait_stream(side)
        return outputs

    def _capture(self, step: Callable[..., Any], inputs: tuple[Tensor | None, ...]) -> None:
        self.static_inputs = tuple(None if x is None else x.clone() for x in inputs)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: a DataLoader pin-memory thread may touch CUDA while this thread captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.static_outputs = step(*self.static_inputs)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GnPluginError(
                f"train.cuda_graph: capturing the D step failed ({reason}); train without it (train.cuda_graph=false)"
            ) from None
        self.graph = graph
