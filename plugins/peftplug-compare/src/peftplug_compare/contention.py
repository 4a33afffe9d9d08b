"""Was the machine busy while a row ran? Other processes' share of the CPUs, and steal.

While rows run, the runner samples the kernel's CPU counters (``/proc/stat``) and each running
row process's own CPU time (``/proc/<pid>/stat``; an ended row's from its result). What the CPUs
spent in an interval beyond the rows' own time went to other processes (or, as steal, to other
virtual machines on the host); it is charged to every row running in that interval, and slowed
its timings. Rows running side by side (``--jobs``) are the comparison's own work, not others'.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PROC = Path("/proc")
# Flag a row when others took more than this share of all CPUs (a third of a core on 2 cores) ...
OTHERS_LIMIT = 0.15
# ... or the hypervisor stole more than this share.
STEAL_LIMIT = 0.05


def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclasses.dataclass(frozen=True)
class CpuCounters:
    """Seconds all CPUs together spent busy, stolen, and in total, since boot."""

    busy: float
    steal: float
    total: float


def read_cpu_counters(stat: Path = PROC / "stat") -> CpuCounters | None:
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
    busy = user + nice + system + irq + softirq
    per_second = _ticks_per_second()
    return CpuCounters(
        busy / per_second, steal / per_second, (busy + idle + iowait + steal) / per_second
    )


def process_cpu_seconds(pid: int, proc: Path = PROC) -> float | None:
    """User plus system CPU seconds of a running process; ``None`` once it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _ticks_per_second()  # utime, stime


@dataclasses.dataclass
class RowLoad:
    """What the CPUs did in the intervals one row ran in, in seconds."""

    others: float = 0.0
    steal: float = 0.0
    total: float = 0.0

    def figures(self) -> dict[str, Any] | None:
        """Others' and steal's share, and whether either is enough to flag the row's timings."""
        if self.total <= 0:
            return None
        others, steal = self.others / self.total, self.steal / self.total
        return {
            "other_cpu_share": others,
            "steal_share": steal,
            "contended": others > OTHERS_LIMIT or steal > STEAL_LIMIT,
        }


class ContentionMonitor:
    """Charges each interval's CPU time beyond the running rows' own to every row running."""

    def __init__(self, read: Callable[[], CpuCounters | None] = read_cpu_counters) -> None:
        self.read = read
        self.last = read()
        self.own_last: dict[int, float] = {}
        self.loads: dict[int, RowLoad] = {}

    def sample(self, own: Mapping[int, float | None]) -> None:
        """Close an interval: ``own`` maps each running row to its CPU seconds so far."""
        now = self.read()
        if now is not None and self.last is not None:
            known = {row: seconds for row, seconds in own.items() if seconds is not None}
            spent = sum(seconds - self.own_last.get(row, 0.0) for row, seconds in known.items())
            others = max(0.0, (now.busy - self.last.busy) - spent)
            for row in own:
                load = self.loads.setdefault(row, RowLoad())
                load.others += others
                load.steal += now.steal - self.last.steal
                load.total += now.total - self.last.total
            self.own_last.update(known)
        self.last = now

    def finish(self, row: int) -> dict[str, Any] | None:
        """The row's figures (``None`` where the counters are missing); forgets the row."""
        self.own_last.pop(row, None)
        load = self.loads.pop(row, None)
        return load.figures() if load else None
