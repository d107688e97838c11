"""Where a result was measured: CPU/GPU model, threads, library versions, date."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str | int]:
    """A JSON-ready description of this machine, for every committed result."""
    info: dict[str, str | int] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_line(info: dict[str, str | int]) -> str:
    """One human line: ``CPU (N cpus, T torch threads), torch X, date``."""
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (
        f"{info['cpu']} ({info['cpus']} CPUs, {info['torch_threads']} torch threads){gpu}; "
        f"torch {info['torch']}, Python {info['python']}; {info['date']}"
    )
