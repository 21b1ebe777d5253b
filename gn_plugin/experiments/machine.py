"""The machine experiments run on: CPU cores and GPUs to share out, and a description for cost tables."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (honouring ``CUDA_VISIBLE_DEVICES``)."""
    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def machine_info() -> dict[str, Any]:
    """CPU model and cores, GPUs, OS, Python and torch versions of this machine."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.is_file() else []
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": models[0] if models else platform.processor() or "unknown CPU", "cores": cpu_cores(), "gpus": gpus,
        "system": platform.platform(terse=True), "python": platform.python_version(), "torch": torch.__version__,
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line: ``2-core CPU (model), no GPU; Linux; Python 3.11; torch 2.x``."""
    gpus = ", ".join(info["gpus"]) if info["gpus"] else "no GPU"
    return f"{info['cores']}-core CPU ({info['cpu']}), {gpus}; {info['system']}; Python {info['python']}; torch {info['torch']}"


def load_average() -> tuple[float, float, float] | None:
    """The system's 1-, 5- and 15-minute load averages, where the OS reports them."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None
