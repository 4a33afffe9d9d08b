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
    """The figure (a mean ± spread over seeds), its 95% interval, and the marks of ``marks``."""
    metric = row.get("metric") or {}
    interval = metric.get("interval")
    spread = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    seeds = f" ± {metric['spread']:.3f} ({metric['seeds']} seeds)" if "spread" in metric else ""
    if "accuracy" in metric:
        return f"{metric['accuracy']:.3f}{seeds}{spread}"
    if "loss" in metric:
        return f"{metric['loss']:.3f}{seeds}{spread} (ppl {metric['perplexity']:.1f})"
    return "-"


def _figure(row: Row) -> float | None:
    metric = row.get("metric") or {}
    return metric.get("accuracy", metric.get("loss"))


def best_row(rows: list[Row]) -> Row | None:
    """The finished row with the highest accuracy (or the lowest loss)."""
    scored = [row for row in rows if row.get("status") == "ok" and _figure(row) is not None]
    if not scored:
        return None
    higher_is_better = "accuracy" in scored[0]["metric"]
    return (max if higher_is_better else min)(scored, key=lambda row: _figure(row))


def tied_with(row: Row, best: Row | None) -> bool:
    """Whether ``row``'s 95% interval overlaps ``best``'s: the evaluation cannot order them."""
    if best is None or row is best:
        return False
    mine, theirs = (row.get("metric") or {}).get("interval"), best["metric"].get("interval")
    return bool(mine and theirs and mine[0] <= theirs[1] and theirs[0] <= mine[1])


def contended(row: Row) -> bool:
    """Whether other processes (or steal) took enough CPU during the row to skew its timings."""
    return bool((row.get("contention") or {}).get("contended"))


def beats_majority(row: Row) -> bool:
    """Whether a trained row's accuracy interval lies above always answering the commonest class.

    Rows without an interval or a majority rate (a loss, an older report) count as beating it.
    """
    metric = row.get("metric") or {}
    interval, majority = metric.get("interval"), metric.get("majority_rate")
    return interval is None or majority is None or interval[0] > majority


def _marked(row: Row, best: Row | None) -> str:
    marks = "".join(
        mark
        for mark, applies in (
            (" best", row is best),
            (" ~", tied_with(row, best)),
            (" *", bool(row.get("training")) and not beats_majority(row)),
        )
        if applies
    )
    return _metric(row) + marks


def _timed(text: str, row: Row) -> str:
    return text + (" †" if contended(row) and text != "-" else "")


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
    ("s/step", lambda r: _timed(_number(_get(r, "training", "seconds_per_step"), ".3f"), r)),
    ("tokens/s", lambda r: _number(_get(r, "training", "tokens_per_second"), ",.0f")),
    ("train s", lambda r: _number(_get(r, "training", "seconds"), ".1f")),
    ("peak train MB (+delta)", _memory),
    ("held-out", _metric),
    ("latency ms: unmerged / merged (vs base)", lambda r: _timed(_latency(r), r)),
]


def cells(row: Row, best: Row | None = None) -> list[str]:
    """The row's cells in column order, the held-out figure marked against ``best`` (``notes``);
    a failed row shows its error after the name."""
    if row.get("status") == "failed":
        return [row["label"], f"FAILED: {row.get('error')}"] + [""] * (len(COLUMNS) - 2)
    return [_marked(row, best) if title == "held-out" else render(row) for title, render in COLUMNS]


def notes(rows: list[Row]) -> list[str]:
    """What the marks of ``cells`` mean in this table, one line per mark in use."""
    best = best_row(rows)
    lines = []
    tied = [row["label"] for row in rows if row.get("status") == "ok" and tied_with(row, best)]
    if best is not None and tied:
        lines.append(
            f"~ inside the noise: the 95% interval overlaps that of the best row, "
            f"{best['label']} ({_figure(best):.3f}), so this evaluation does not order them: "
            f"{', '.join(tied)}"
        )
    stuck = below_majority(rows)
    if stuck:
        lines.append(
            f"* did not beat the majority class at this budget: {', '.join(stuck)} (the 95% "
            "interval reaches down to always answering the commonest class); a larger --steps "
            "or another --lr may help"
        )
    busy = [row for row in rows if row.get("status") == "ok" and contended(row)]
    if busy:
        worst = max(busy, key=lambda row: row["contention"]["other_cpu_share"])
        share = worst["contention"]
        lines.append(
            f"† timed on a busy machine: {', '.join(row['label'] for row in busy)} (other "
            f"processes used up to {share['other_cpu_share']:.0%} of the CPUs, steal "
            f"{share['steal_share']:.0%}); their s/step and latency are inflated, the latency "
            "ratios to the base (timed in turns) less so; re-run them on a quiet machine"
        )
    return lines


def headers(metric_name: str) -> list[str]:
    """Column titles, naming the task's metric."""
    titles = [title for title, _ in COLUMNS]
    titles[titles.index("held-out")] = f"held-out {metric_name}"
    return titles


def terminal_table(rows: list[Row], metric_name: str) -> str:
    """A plain-text table; failed rows print their error on their own line."""
    titles = headers(metric_name)
    best = best_row(rows)
    body = [cells(row, best) for row in rows if row.get("status") != "failed"]
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
