"""Measurements taken inside a row's own process: peak memory, latency, bytes on disk.

Peak memory is the process's peak resident set size (``VmHWM``). Linux lets a process reset
it (``/proc/self/clear_refs``), so the training peak excludes loading the model and data.
Each row runs in a fresh process, so no other row's allocations are counted.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn

STATUS_FILE = Path("/proc/self/status")
CLEAR_REFS_FILE = Path("/proc/self/clear_refs")
MB = 2**20


def _status_kib(field: str) -> int:
    for line in STATUS_FILE.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{STATUS_FILE} has no {field} line")


def rss_mb() -> float:
    """The resident set size now, in MiB."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mb() -> float:
    """The peak resident set size since the process started or the last reset, in MiB."""
    return _status_kib("VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Restart peak tracking from the current RSS; ``False`` where the kernel does not allow it."""
    try:
        CLEAR_REFS_FILE.write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, float | bool]]:
    """Measure the peak RSS inside the block: fills ``before_mb``, ``peak_mb``, ``delta_mb``."""
    figures: dict[str, float | bool] = {"reset": reset_peak_rss(), "before_mb": rss_mb()}
    yield figures
    figures["peak_mb"] = peak_rss_mb()
    figures["delta_mb"] = figures["peak_mb"] - figures["before_mb"]


def adapter_bytes(directory: str | Path) -> int:
    """Size of the adapter files (``adapter_*``: config and weights) in ``directory``.

    Both peftplug and HF PEFT name their adapter files so; PEFT's generated README is not counted.
    """
    return sum(p.stat().st_size for p in Path(directory).glob("adapter_*") if p.is_file())


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer the model holds (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def parameter_count(model: nn.Module) -> int:
    """Parameters of the model, each shared tensor once."""
    return sum(p.numel() for p in model.parameters())


def interleaved_latency_ms(
    forward: Callable[[], object],
    settings: Mapping[str, Callable[[], AbstractContextManager[object]]],
    repeats: int,
    warmup: int = 2,
) -> dict[str, float]:
    """Median milliseconds of ``forward`` under each setting (a context such as "adapters off"),
    taking turns so drift hits all alike; entering the context is not timed."""
    for setting in settings.values():
        with setting():
            for _ in range(warmup):
                forward()
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, setting in settings.items():
            with setting():
                started = time.perf_counter()
                forward()
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def forward_call(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Callable[[], object]:
    """One eval-mode, no-grad forward pass of ``model`` on ``batch``."""

    def call() -> object:
        with torch.inference_mode():
            return model(**batch)

    return call
