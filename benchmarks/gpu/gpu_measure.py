"""Timing and result files shared by the GPU benchmarks (kernel_benchmarks.py, trainer_step.py).

On a GPU, times are CUDA-event medians after warm-up; on the CPU (the rehearsal, ``--device
cpu``) they are wall-clock medians, only to show that the code runs. Results are rewritten to
their JSON file after every row, atomically, so a run stopped by its time limit keeps every row
that finished.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

WARMUP_CALLS = 3


def add_run_arguments(parser: argparse.ArgumentParser, unit: str) -> None:
    """The options both GPU benchmarks take: results file, time budget, device, rehearsal size."""
    parser.add_argument("--json", type=Path, help=f"write the figures here, {unit} by {unit}")
    parser.add_argument(
        "--budget-s", type=float, help=f"time budget in seconds: no {unit} is measured past it"
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="rehearsal sizes (with --device cpu)")


def chosen_device(parser: argparse.ArgumentParser, options: argparse.Namespace) -> torch.device:
    """The device asked for; a clear error when it is the GPU and torch sees none."""
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("no GPU is visible to torch: run on the GPU machine, or rehearse with "
                     "--device cpu --tiny")
    return torch.device(options.device)


class Clock:
    """Median time of a function on one device, in milliseconds."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device = device
        self.repeats = repeats

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def milliseconds(self, function: Callable[[int], object]) -> float:
        """Median over ``repeats`` calls of ``function(call_index)``, after warm-up calls.

        The call index lets a caller rotate among copies of its inputs, so that repeated calls
        do not find them in the GPU's L2 cache.
        """
        for call in range(WARMUP_CALLS):
            function(call)
        self.synchronize()
        times = []
        for call in range(self.repeats):
            if self.device.type == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                function(call)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                started = time.perf_counter()
                function(call)
                times.append((time.perf_counter() - started) * 1e3)
        return statistics.median(times)


class Deadline:
    """The end of a time budget, in seconds from now; ``None`` means no budget."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() > self.end

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()


class Results:
    """A JSON document of sections of rows, rewritten atomically after every change."""

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path = path
        self.document: dict[str, Any] = {**header, "sections": {}}
        self._write()

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.document["sections"].setdefault(section, {"rows": []})["rows"].append(row)
        self._write()

    def note(self, section: str, key: str, value: Any) -> None:  # noqa: ANN401 (any JSON value)
        self.document["sections"].setdefault(section, {"rows": []})[key] = value
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(self.document, indent=1, default=str) + "\n")
        os.replace(partial, self.path)


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """||result - reference|| / ||reference|| in float64 (NaN when either holds a NaN)."""
    difference = result.double() - reference.double()
    return (difference.norm() / reference.double().norm().clamp_min(1e-30)).item()
