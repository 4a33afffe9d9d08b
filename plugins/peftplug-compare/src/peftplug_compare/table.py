"""The comparison table's cells, shared by the terminal table and the Markdown report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


def _number(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _get(row: Row, *path: str) -> Any:
    value: Any = row
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _trainable(row: Row) -> str:
    count, percent = (
        _get(row, "parameters", "trainable"),
        _get(row, "parameters", "trainable_percent"),
    )
    if count is None:
        return "-"
    return f"{count:,} ({percent:.3g}%)"


def _metric(row: Row) -> str:
    """The figure, its 95% interval, and a mark when an accuracy is not above the majority."""
    metric = row.get("metric") or {}
    interval = metric.get("interval")
    spread = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    if "accuracy" in metric:
        return f"{metric['accuracy']:.3f}{spread}" + (" *" if not beats_majority(row) else "")
    if "loss" in metric:
        return f"{metric['loss']:.3f}{spread} (ppl {metric['perplexity']:.1f})"
    return "-"


def beats_majority(row: Row) -> bool:
    """Whether a trained row's accuracy interval lies above always answering the commonest class.

    Rows without an interval or a majority rate (a loss, an older report) count as beating it.
    """
    metric = row.get("metric") or {}
    interval, majority = metric.get("interval"), metric.get("majority_rate")
    return interval is None or majority is None or interval[0] > majority


def below_majority(rows: list[Row]) -> list[str]:
    """Labels of the trained rows that do not beat the majority class (``beats_majority``)."""
    return [row["label"] for row in rows if row.get("training") and not beats_majority(row)]


def _memory(row: Row) -> str:
    peak, delta = _get(row, "training", "peak_rss_mb"), _get(row, "training", "memory_delta_mb")
    return "-" if peak is None else f"{peak:,.0f} (+{delta:,.0f})"


def _latency(row: Row) -> str:
    inference = row.get("inference") or {}
    base, unmerged = inference.get("base_ms"), inference.get("unmerged_ms")
    if base is None:
        return "-"
    if unmerged is None:
        return f"{base:.1f}"
    merged = inference.get("merged_ms")
    text = f"{unmerged:.1f} ({unmerged / base:.2f}x)"
    if merged is not None:
        text += f" / {merged:.1f} ({merged / base:.2f}x)"
    return text


COLUMNS: list[tuple[str, Callable[[Row], str]]] = [
    ("method", lambda r: r["label"]),
    ("trainable params", _trainable),
    ("adapter bytes", lambda r: _number(_get(r, "storage", "adapter_bytes"), ",")),
    ("s/step", lambda r: _number(_get(r, "training", "seconds_per_step"), ".3f")),
    ("tokens/s", lambda r: _number(_get(r, "training", "tokens_per_second"), ",.0f")),
    ("train s", lambda r: _number(_get(r, "training", "seconds"), ".1f")),
    ("peak train MB (+delta)", _memory),
    ("held-out", _metric),
    ("latency ms: unmerged / merged (vs base)", _latency),
]


def cells(row: Row) -> list[str]:
    """The row's cells in column order; a failed row shows its error after the name."""
    if row.get("status") == "failed":
        return [row["label"], f"FAILED: {row.get('error')}"] + [""] * (len(COLUMNS) - 2)
    return [render(row) for _, render in COLUMNS]


def headers(metric_name: str) -> list[str]:
    """Column titles, naming the task's metric."""
    titles = [title for title, _ in COLUMNS]
    titles[titles.index("held-out")] = f"held-out {metric_name}"
    return titles


def terminal_table(rows: list[Row], metric_name: str) -> str:
    """A plain-text table; failed rows print their error on their own line."""
    titles = headers(metric_name)
    body = [cells(row) for row in rows if row.get("status") != "failed"]
    widths = [
        max(len(t), *(len(r[i]) for r in body)) if body else len(t) for i, t in enumerate(titles)
    ]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    lines += [
        f"{row['label']}: FAILED: {row.get('error')}"
        for row in rows
        if row.get("status") == "failed"
    ]
    return "\n".join(lines)
