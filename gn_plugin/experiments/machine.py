"""The machine experiments run on: CPU cores and GPUs to share out, and a description for cost tables."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from gn_plugin.training.threads import cpu_cores, load_average

__all__ = ["cpu_cores", "describe_machine", "load_average", "machine_info", "visible_gpus"]


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
