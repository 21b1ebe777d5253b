"""How many CPU threads a run computes with (``train.threads``), and the share each job of a benchmark gets.

PyTorch starts one thread per core. On a CPU that other processes keep busy, or with a model whose
operations are too small to split, those threads wait on each other: the digits MLP ran 19 to 36
times slower with two threads than with one on a 2-core machine kept busy by other processes, while
a convolutional model on an idle machine gains from every core (docs: Performance, CPU threads).
``auto`` therefore gives a small model one thread, and a large one the cores that the load average
says are free. An ``OMP_NUM_THREADS`` set by the user (or by ``torchrun``, or by ``gnbench bench``
for its jobs) is respected: it decides, and ``auto`` does not override it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

#: G + D parameters below which a model counts as small: one thread is as fast as more, and never
#: oversubscribes a shared CPU (the digits MLP has 0.31 M; the 32 px CNN 9.7 M)
SMALL_MODEL_PARAMETERS = 1_000_000


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> tuple[float, float, float] | None:
    """The system's 1-, 5- and 15-minute load averages, where the OS reports them."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def thread_share(cores: int, jobs: int) -> int:
    """Threads per process when ``jobs`` processes share ``cores``: an equal share, at least one."""
    return max(1, cores // jobs)


def auto_threads(parameters: int, cores: int, load: float | None) -> tuple[int, str]:
    """``train.threads: auto``: the thread count for a model of ``parameters`` (G + D), and why.

    A small model (:data:`SMALL_MODEL_PARAMETERS`) gets one thread. A large one gets the cores the
    others leave free: ``cores`` less the 1-minute ``load`` average (read before this run computes
    anything), rounded, at least one; all of them on an idle machine.
    """
    if parameters < SMALL_MODEL_PARAMETERS:
        return 1, f"a small model ({parameters / 1e6:.2f} M parameters) runs fastest on one thread"
    if load is None:
        return cores, f"{cores} cores, no load average to read"
    busy = min(cores - 1, round(load))
    threads = thread_share(cores - busy, 1)
    return threads, f"{cores} cores, {busy} of them busy (load average {load:.1f})"


@dataclass(frozen=True)
class ThreadChoice:
    """The threads a run computes with and where the number comes from (for the log)."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"CPU threads: {self.threads} ({self.reason})"


def choose_threads(setting: int | str, device: torch.device, parameters: int) -> ThreadChoice:
    """Apply ``train.threads`` (``auto`` or a count) with :func:`torch.set_num_threads`; returns the choice.

    ``OMP_NUM_THREADS`` in the environment wins over ``auto`` (PyTorch has read it already); an explicit
    count wins over both. On a GPU ``auto`` keeps PyTorch's default: the CPU only feeds the device.
    """
    if setting != "auto":
        torch.set_num_threads(int(setting))
        return ThreadChoice(int(setting), "train.threads")
    if os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    if device.type != "cpu":
        return ThreadChoice(torch.get_num_threads(), f"PyTorch's default; the model runs on {device}")
    average = load_average()
    threads, reason = auto_threads(parameters, cpu_cores(), average[0] if average else None)
    torch.set_num_threads(threads)
    return ThreadChoice(threads, f"auto: {reason}")
