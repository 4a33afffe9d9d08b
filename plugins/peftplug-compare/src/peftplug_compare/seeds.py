"""Rows run under several seeds (``--seeds N``) shown as one: the mean, the spread, every seed."""

from __future__ import annotations

import copy
import math
import statistics
from typing import Any

Row = dict[str, Any]
AVERAGED = (
    ("training", "seconds_per_step"),
    ("training", "tokens_per_second"),
    ("training", "seconds"),
)


def _mean_of(rows: list[Row], section: str, key: str) -> float | None:
    values = [row[section][key] for row in rows if (row.get(section) or {}).get(key) is not None]
    return statistics.fmean(values) if values else None


def combine(rows: list[Row]) -> Row:
    """One row from the same row's runs under several seeds.

    The held-out figure is the mean over seeds and ``spread`` their sample standard deviation;
    the interval spans every seed's own 95% interval, so a difference inside it is noise from
    the evaluation or from the seed. Timings are means; the rest is the first seed's.
    """
    finished = [row for row in rows if row.get("status") == "ok"]
    if not finished:
        return rows[0]
    combined = copy.deepcopy(finished[0])
    metric = combined["metric"]
    name = "accuracy" if "accuracy" in metric else "loss"
    values = [row["metric"][name] for row in finished]
    metric[name] = statistics.fmean(values)
    metric["per_seed"] = values
    metric["seeds"] = len(values)
    metric["spread"] = statistics.stdev(values) if len(values) > 1 else 0.0
    intervals = [row["metric"]["interval"] for row in finished if row["metric"].get("interval")]
    if intervals:
        metric["interval"] = [min(low for low, _ in intervals), max(high for _, high in intervals)]
    if name == "loss":
        metric["perplexity"] = math.exp(min(metric["loss"], 50.0))
    for section, key in AVERAGED:
        if combined.get(section):
            combined[section][key] = _mean_of(finished, section, key)
    combined["seeds"] = [row.get("seed") for row in rows]
    combined["learning_rates"] = [row.get("learning_rate") for row in finished]
    failed = len(rows) - len(finished)
    if failed:
        combined["failed_seeds"] = failed
    contended = [row for row in finished if (row.get("contention") or {}).get("contended")]
    if contended:
        combined["contention"] = max(
            (row["contention"] for row in contended), key=lambda c: c["other_cpu_share"]
        )
    return combined


def by_label(rows: list[Row]) -> list[Row]:
    """The rows in first-seen order, the runs of each label under several seeds combined."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return [group[0] if len(group) == 1 else combine(group) for group in groups.values()]
