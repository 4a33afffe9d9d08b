"""The comparison chart: held-out metric against trainable parameters, memory and latency."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from peftplug.atomic import atomic_write_files


def write_chart(path: Path, rows: list[dict[str, Any]], metric: str) -> Path | None:
    """Draw the finished rows into a PNG at ``path`` (atomically); ``None`` if none finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("status") == "ok"]
    if not done:
        return None
    figure, (scatter, memory, latency) = plt.subplots(1, 3, figsize=(17, 5.5))
    for row in done:
        count = max(row["parameters"]["trainable"], 1)  # the untrained model at 1 on a log axis
        value = row["metric"][metric]
        scatter.scatter(count, value, s=40)
        scatter.annotate(row["label"], (count, value), textcoords="offset points", xytext=(4, 4))
    scatter.set_xscale("log")
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
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_files({path: buffer.getvalue()})
    return path
