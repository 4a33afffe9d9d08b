"""What the table, the report and the chart mark: noise, the majority class, busy timings, seeds."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import pytest
from peftplug_compare.chart import draw_chart, text_box
from peftplug_compare.contention import (
    ContentionMonitor,
    CpuCounters,
    process_cpu_seconds,
    read_cpu_counters,
)
from peftplug_compare.plan import plan_rows
from peftplug_compare.report import markdown
from peftplug_compare.seeds import by_label
from peftplug_compare.table import beats_majority, best_row, cells, notes, tied_with

from peftplug.workload.intervals import wilson_interval
from peftplug.workload.options import Workload


def row(label: str, hits: int, trials: int = 500, **extra: Any) -> dict[str, Any]:
    """A finished trained row whose accuracy is ``hits / trials`` with its Wilson interval."""
    return {
        "label": label,
        "status": "ok",
        "metric": {
            "accuracy": hits / trials,
            "interval": list(wilson_interval(hits, trials)),
            "majority_rate": 0.586,
        },
        "training": {"seconds_per_step": 0.4, "tokens_per_second": 1000.0, "seconds": 32.0},
        "parameters": {"trainable": 1000, "trainable_percent": 0.1},
        "inference": {"base_ms": 100.0, "unmerged_ms": 110.0, "merged_ms": None},
        "learning_rate": 1e-3,
        **extra,
    }


def test_the_majority_mark_needs_the_interval_above_the_rate() -> None:
    stuck = row("stuck", 380)  # 0.760 [0.721, 0.795]: above 0.586
    assert beats_majority(stuck)
    stuck["metric"]["interval"] = [0.58, 0.62]
    assert not beats_majority(stuck)


def test_rows_inside_the_best_rows_interval_are_marked_and_named() -> None:
    rows = [row("best", 400), row("close", 390), row("far", 330)]  # 0.80, 0.78, 0.66
    best = best_row(rows)
    assert best is rows[0]
    # Wilson at n=500: 0.80 -> [0.763, 0.833], 0.78 -> [0.742, 0.814] overlap; 0.66 -> [0.617,
    # 0.700] does not reach 0.763
    assert tied_with(rows[1], best) and not tied_with(rows[2], best)
    assert [cells(r, best)[7].split()[-1] for r in rows] == ["best", "~", "0.700]"]
    (note,) = notes(rows)
    assert note.startswith("~ inside the noise") and "best (0.800)" in note and "close" in note


def test_the_untrained_row_gets_no_majority_mark() -> None:
    untrained = {**row("untrained", 243), "training": None}  # 0.486: below the majority
    trained = row("stuck", 295)  # 0.59 [0.546, 0.632]
    assert not cells(untrained, None)[7].endswith("*")
    assert cells(trained, None)[7].endswith("*")
    assert notes([untrained, trained])[-1].startswith("* did not beat the majority class")
    assert "stuck" in notes([untrained, trained])[-1]
    assert "untrained" not in notes([untrained, trained])[-1]


def test_contention_is_what_the_cpus_did_beyond_the_rows_own_time() -> None:
    """Two intervals of 10 s on two CPUs (20 CPU-seconds each): rows 0 and 1 side by side, then
    row 1 alone. Others took 2 s of the first interval and 6 s of the second."""
    readings = iter(
        [
            CpuCounters(busy=100.0, steal=1.0, total=1000.0),
            CpuCounters(busy=118.0, steal=1.0, total=1020.0),  # rows: 9 + 7 s, others 2 s
            CpuCounters(busy=132.0, steal=3.0, total=1040.0),  # row 1: 8 s, others 6 s, steal 2 s
        ]
    )
    monitor = ContentionMonitor(read=lambda: next(readings))
    monitor.sample({0: 9.0, 1: 7.0})
    assert monitor.finish(0) == {
        "other_cpu_share": pytest.approx(0.1),
        "steal_share": 0.0,
        "contended": False,
    }
    monitor.sample({1: 15.0})
    busy = monitor.finish(1)
    assert busy["other_cpu_share"] == pytest.approx(8 / 40) and busy["contended"]
    assert busy["steal_share"] == pytest.approx(2 / 40)
    assert ContentionMonitor(read=lambda: None).finish(0) is None


def test_a_running_process_cpu_time_is_read_from_proc(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "42").mkdir()
    fields = ["S"] + ["0"] * 10 + [str(3 * ticks), str(ticks)] + ["0"] * 30
    (tmp_path / "42" / "stat").write_text("42 (a (b) c) " + " ".join(fields))
    assert process_cpu_seconds(42, proc=tmp_path) == 4.0
    assert process_cpu_seconds(43, proc=tmp_path) is None
    assert process_cpu_seconds(os.getpid()) >= 0.0


def test_proc_stat_is_read_in_seconds(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    stat.write_text(f"cpu  {ticks} 0 {ticks} {8 * ticks} 0 0 0 {ticks} 0 0\ncpu0 1 2 3\n")
    assert read_cpu_counters(stat) == CpuCounters(busy=2.0, steal=1.0, total=11.0)
    assert read_cpu_counters(tmp_path / "missing") is None


def test_contended_rows_mark_their_timings_and_say_so() -> None:
    busy = row(
        "busy", 400, contention={"other_cpu_share": 0.4, "steal_share": 0.0, "contended": True}
    )
    calm = row(
        "calm", 400, contention={"other_cpu_share": 0.01, "steal_share": 0.0, "contended": False}
    )
    assert cells(busy)[3].endswith("†") and cells(busy)[-1].endswith("†")
    assert not cells(calm)[3].endswith("†")
    assert any(
        note.startswith("† timed on a busy machine: busy (") and "40%" in note
        for note in notes([busy, calm])
    )


def test_seeds_become_one_row_with_mean_spread_and_every_interval() -> None:
    runs = [row("lora", hits, seed=seed) for seed, hits in enumerate((380, 390, 400))]
    runs[1]["learning_rate"] = 3e-3
    (combined,) = by_label(runs)
    values = [0.76, 0.78, 0.80]
    assert combined["metric"]["accuracy"] == pytest.approx(statistics.fmean(values))
    assert combined["metric"]["spread"] == pytest.approx(statistics.stdev(values))  # 0.02
    assert combined["metric"]["per_seed"] == pytest.approx(values) and combined["seeds"] == [
        0,
        1,
        2,
    ]
    assert combined["metric"]["interval"] == [
        runs[0]["metric"]["interval"][0],
        runs[2]["metric"]["interval"][1],
    ]
    assert "0.780 ± 0.020 (3 seeds)" in cells(combined)[7]
    assert combined["learning_rates"] == [1e-3, 3e-3, 1e-3]


def test_a_failed_seed_is_counted_not_averaged() -> None:
    runs = [
        row("lora", 380, seed=0),
        {"label": "lora", "status": "failed", "error": "boom", "seed": 1},
    ]
    (combined,) = by_label(runs)
    assert combined["metric"]["accuracy"] == 0.76 and combined["failed_seeds"] == 1


def test_plan_repeats_every_row_under_each_seed(tmp_path: Path) -> None:
    specs = plan_rows(Workload(seed=5), tmp_path, methods=["lora"], baselines=False, seeds=3)
    assert [(spec.label, spec.workload.seed) for spec in specs] == [
        (label, seed) for label in ("untrained", "lora") for seed in (5, 6, 7)
    ]
    adapters = [spec.adapter_dir for spec in specs if spec.label == "lora"]
    assert len(set(adapters)) == 3 and adapters[1].endswith("lora-seed6")


def test_the_report_shows_combined_rows_and_escapes_its_notes() -> None:
    runs = [row("lora", hits, seed=seed) for seed, hits in enumerate((380, 400))]
    record = {
        "status": "complete",
        "workload": Workload().to_dict(),
        "environment": {
            "command": "peftplug compare --seeds 2",
            "started": "now",
            "machine": {"cpu": "a CPU", "cores_available": 2},
            "packages": {"torch": "2", "transformers": "5"},
        },
        "rows": [*runs, row("stuck", 295)],
        "chart": None,
    }
    text = markdown(record)
    assert text.count("| lora |") == 1 and "(2 seeds)" in text
    assert "\n- \\* did not beat the majority class at this budget: stuck" in text


def test_the_chart_never_stacks_labels() -> None:
    """Six methods at one accuracy and similar sizes, on an axis from 1 to 22M parameters: every
    label's box is clear of the others."""
    rows = [row(f"method-{index}", 293) for index in range(6)]
    for index, each in enumerate(rows):
        each["parameters"]["trainable"] = 70_000 + 5_000 * index
    rows += [row("untrained", 243), row("full", 380)]
    rows[-2]["parameters"]["trainable"], rows[-1]["parameters"]["trainable"] = 0, 22_000_000
    for each in rows:
        each["training"]["peak_rss_mb"] = 900.0
    figure = draw_chart(rows, "accuracy")
    renderer = figure.canvas.get_renderer()
    boxes = [text_box(text, renderer) for text in figure.axes[0].texts]
    assert len(boxes) == 8
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
