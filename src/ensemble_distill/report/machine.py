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


# The instruction-set extensions that decide which kernels torch's CPU back end can use.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """Which of :data:`ISA_FLAGS` the CPU reports in /proc/cpuinfo (empty elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in ISA_FLAGS if flag in present]
    return []


def machine_info() -> dict[str, str | int]:
    """A JSON-ready description of this machine, for every committed result."""
    info: dict[str, str | int] = {
        "cpu": cpu_model(),
        "cpu_flags": " ".join(cpu_flags()) or "none of " + " ".join(ISA_FLAGS),
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
    """One human line: ``CPU (N cpus, T torch threads; ISA flags), torch X, date``."""
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    flags = f"; {info['cpu_flags']}" if "cpu_flags" in info else ""  # older records lack them
    return (
        f"{info['cpu']} ({info['cpus']} CPUs, {info['torch_threads']} torch threads{flags})"
        f"{gpu}; "
        f"torch {info['torch']}, Python {info['python']}; {info['date']}"
    )
