"""The comparison chart: held-out metric against trainable parameters, memory and latency."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from peftplug.atomic import atomic_write_files
from peftplug_compare.seeds import by_label
from peftplug_compare.table import best_row

LABEL_HEIGHT_POINTS = 11  # one label's line on the chart


def _annotate(axes: Any, label: str, x: float, y: float, lines: int) -> Any:
    return axes.annotate(
        label,
        (x, y),
        textcoords="offset points",
        xytext=(4, 4 + lines * LABEL_HEIGHT_POINTS),
        fontsize="small",
        arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5} if lines else None,
    )


def text_box(annotation: Any, renderer: Any) -> Any:
    """Where an annotation's text is drawn (not its leader line), in display coordinates."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer)


def _label_points(axes: Any, points: list[tuple[str, float, float]]) -> None:
    """Annotate each point, moving a label up or down a line at a time (the nearest free line
    first) while it would cover one placed before: methods with the same figure and a similar
    size would otherwise print on top of each other. A moved label gets a leader line."""
    axes.figure.canvas.draw()  # fixes the axes' limits, so data maps to display coordinates
    renderer = axes.figure.canvas.get_renderer()
    placed: list[Any] = []
    for label, x, y in sorted(points, key=lambda point: (-point[2], point[1])):
        for step in range(2 * len(points) + 1):  # 0, 1, -1, 2, -2, ...: one of them is free
            lines = (step + 1) // 2 * (1 if step % 2 else -1)
            annotation = _annotate(axes, label, x, y, lines)
            box = text_box(annotation, renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            annotation.remove()
        placed.append(box)


def write_chart(path: Path, rows: list[dict[str, Any]], metric: str) -> Path | None:
    """Draw the finished rows into a PNG at ``path`` (atomically); ``None`` if none finished."""
    import matplotlib.pyplot as plt

    figure = draw_chart(rows, metric)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_files({path: buffer.getvalue()})
    return path


def draw_chart(rows: list[dict[str, Any]], metric: str) -> Any:
    """The figure of the finished rows (seeds combined); ``None`` if none finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in by_label(rows) if r.get("status") == "ok"]
    if not done:
        return None
    figure, (scatter, memory, latency) = plt.subplots(1, 3, figsize=(17, 5.5))
    points = []
    for row in done:
        count = max(row["parameters"]["trainable"], 1)  # the untrained model at 1 on a log axis
        value = row["metric"][metric]
        low, high = row["metric"].get("interval") or (value, value)
        scatter.errorbar(count, value, yerr=[[value - low], [high - value]], fmt="o", capsize=3)
        points.append((row["label"], count, value))
    best = best_row(done)
    if best is not None and best["metric"].get("interval"):
        scatter.axhspan(
            *best["metric"]["interval"],
            color="tab:green",
            alpha=0.12,
            label=f"95% interval of the best ({best['label']}): inside it is noise",
        )
    majority = next((r["metric"].get("majority_rate") for r in done), None)
    if majority is not None:
        scatter.axhline(majority, color="grey", linestyle="--", label="majority class")
    scatter.set_xscale("log")
    scatter.legend(loc="lower right", fontsize="small")
    scatter.set_xlabel("trainable parameters (log; untrained at 1)")
    scatter.set_ylabel(f"held-out {metric}")
    scatter.set_title(f"{metric} against trainable parameters")
    scatter.grid(True, alpha=0.3)

    trained = [r for r in done if r.get("training")]
    labels = [r["label"] for r in trained]
    memory.barh(labels, [r["training"]["peak_rss_mb"] for r in trained], color="tab:orange")
    memory.set_xlabel("peak RSS during training (MiB)")
    memory.set_title("training memory")
    memory.invert_yaxis()

    names = [r["label"] for r in done]
    positions = range(len(done))
    base = [r["inference"]["base_ms"] for r in done]
    unmerged = [r["inference"].get("unmerged_ms") or 0 for r in done]
    merged = [r["inference"].get("merged_ms") or 0 for r in done]
    height = 0.27
    latency.barh([p - height for p in positions], base, height, label="base")
    latency.barh(list(positions), unmerged, height, label="adapted, unmerged")
    latency.barh([p + height for p in positions], merged, height, label="merged")
    latency.set_yticks(list(positions), names)
    latency.invert_yaxis()
    latency.set_xlabel("forward latency, one batch (ms, median)")
    latency.set_title("inference latency")
    latency.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small")
    figure.tight_layout()
    _label_points(scatter, points)  # after the layout: it places labels in display space
    return figure
