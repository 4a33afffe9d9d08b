"""What a comparison ran on: the command, versions, seed and machine, for the JSON record."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from peftplug.plugins import get_host

PACKAGES = ("peftplug", "torch", "transformers", "accelerate", "peft", "safetensors", "pluggy")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total_mb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return None


def available_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def describe_environment(argv: list[str]) -> dict[str, Any]:
    """Command, date, package and plugin versions, and the machine."""
    import torch

    plugins = {
        name: {"distribution": info.distribution, "version": info.version, "error": info.error}
        for name, info in sorted(get_host().plugins.items())
    }
    return {
        "command": shlex.join(["peftplug", *argv]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "plugins": plugins,
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cores_available": available_cores(),
            "memory_total_mb": _memory_total_mb(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda": torch.cuda.is_available(),
            "executable": sys.executable,
        },
    }
