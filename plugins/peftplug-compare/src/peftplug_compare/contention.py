"""Was the machine busy while a row ran? Other processes' share of the CPU, and steal.

The runner reads the kernel's CPU counters (``/proc/stat``) before and after each row; the row
reports the CPU time its own process used. What the machine spent beyond that went to other
processes (or, as steal, to other virtual machines on the host), and slowed the row's timings.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")
# Flag a row when others took more than this share of all CPUs (a third of a core on 2 cores) ...
OTHERS_LIMIT = 0.15
# ... or the hypervisor stole more than this share.
STEAL_LIMIT = 0.05


@dataclasses.dataclass(frozen=True)
class CpuCounters:
    """Seconds all CPUs together spent busy, stolen, and in total, since boot."""

    busy: float
    steal: float
    total: float


def read_cpu_counters(stat: Path = PROC_STAT) -> CpuCounters | None:
    """The first line of ``/proc/stat`` in seconds; ``None`` where there is none (not Linux)."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user, nice]
    ticks = [int(value) for value in fields[1:9]] + [0] * (8 - len(fields[1:9]))
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = user + nice + system + irq + softirq
    return CpuCounters(
        busy / per_second, steal / per_second, (busy + idle + iowait + steal) / per_second
    )


def contention(
    before: CpuCounters | None, after: CpuCounters | None, own_cpu_seconds: float | None
) -> dict[str, Any] | None:
    """Others' and steal's share of all CPUs between the two readings, and whether either was
    enough to flag the row's timings; ``None`` where the counters or the row's time are missing.
    """
    if before is None or after is None or own_cpu_seconds is None:
        return None
    total = after.total - before.total
    if total <= 0:
        return None
    others = max(0.0, (after.busy - before.busy) - own_cpu_seconds) / total
    steal = max(0.0, after.steal - before.steal) / total
    return {
        "other_cpu_share": others,
        "steal_share": steal,
        "contended": others > OTHERS_LIMIT or steal > STEAL_LIMIT,
    }
