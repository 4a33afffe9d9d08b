"""Run the planned rows, each in a fresh process (``--jobs`` side by side); report after each."""

from __future__ import annotations

import dataclasses
import multiprocessing.connection
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from peftplug.workload.options import Workload
from peftplug_compare.chart import write_chart
from peftplug_compare.contention import ContentionMonitor
from peftplug_compare.environment import available_cores, describe_environment
from peftplug_compare.report import CHART_NAME, JSON_NAME, MARKDOWN_NAME, metric_name, write_reports
from peftplug_compare.row_process import RowProcess
from peftplug_compare.seeds import by_label
from peftplug_compare.spec import RowSpec
from peftplug_compare.table import notes, terminal_table

FORMAT = "peftplug-compare"
FORMAT_VERSION = 1


@dataclasses.dataclass
class CompareRun:
    """A comparison in progress: where it writes and what it has measured so far."""

    out: Path
    workload: Workload
    record: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The finished rows (failed ones included)."""
        return self.record["rows"]

    def save(self) -> None:
        """Write the JSON and Markdown, atomically; once the run has ended (complete or
        interrupted), draw the chart first (a few seconds: not after every row)."""
        if self.record["status"] != "running":
            chart = write_chart(self.out / CHART_NAME, self.rows, metric_name(self.record))
            self.record["chart"] = chart.name if chart else None
        write_reports(self.out, self.record)


POLL_SECONDS = 0.5  # how often the runner checks its rows and the CPU counters


def default_jobs() -> int:
    """Rows side by side: two where there are two cores or more (a small model's step gains
    about 1.5x from a second thread, two one-thread rows about 2x), else one."""
    return 2 if available_cores() >= 2 else 1


def _threads_per_row(jobs: int) -> int | None:
    """The cores shared out among the rows side by side; ``None`` (torch's default) for one."""
    if jobs == 1:
        return None
    return max(1, available_cores() // jobs)


def run_compare(
    workload: Workload,
    specs: list[RowSpec],
    out: Path,
    argv: list[str],
    stream: TextIO | None = None,
    jobs: int = 1,
    remarks: Sequence[str] = (),
) -> CompareRun:
    """Measure every row, ``jobs`` at a time, each in a process of its own. The reports are
    rewritten after each row, so an interrupted run keeps the finished rows (status
    ``interrupted``). Re-raises ``KeyboardInterrupt`` after saving.

    Progress goes to ``stream``, by default the standard output at the time of the call.
    ``remarks`` are the plan's notes on the whole run, printed under the table.
    """
    stream = stream or sys.stdout
    out.mkdir(parents=True, exist_ok=True)
    threads = _threads_per_row(jobs)
    environment = describe_environment(argv)
    environment["machine"].update(jobs=jobs, threads_per_row=threads)
    run = CompareRun(
        out,
        workload,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "running",
            "workload": workload.to_dict(),
            "environment": environment,
            "planned": [spec.label for spec in specs],
            "notes": list(remarks),
            "rows": [],
            "chart": None,
        },
    )
    run.save()
    with tempfile.TemporaryDirectory(prefix="peftplug-compare-") as scratch:
        try:
            _run_rows(run, specs, Path(scratch), jobs, threads, stream)
        except KeyboardInterrupt:
            run.record["status"] = "interrupted"
            run.save()
            print(summary(run), file=stream, flush=True)
            raise
    run.record["status"] = "complete"
    run.save()
    print(summary(run), file=stream, flush=True)
    return run


def _run_rows(
    run: CompareRun,
    specs: list[RowSpec],
    scratch: Path,
    jobs: int,
    threads: int | None,
    stream: TextIO,
) -> None:
    """Keep ``jobs`` row processes going; record each row, with its contention, as it ends."""
    pending = list(enumerate(specs))
    running: dict[int, RowProcess] = {}
    monitor: ContentionMonitor | None = None
    try:
        while pending or running:
            while pending and len(running) < jobs:
                index, spec = pending.pop(0)
                print(f"[{index + 1}/{len(specs)}] {spec.label}", file=stream, flush=True)
                running[index] = RowProcess(spec, scratch, index, threads, quiet=jobs > 1)
                monitor = monitor or ContentionMonitor()  # after the fork server has started
            multiprocessing.connection.wait(
                [row.sentinel for row in running.values()], POLL_SECONDS
            )
            ended = [index for index, row in running.items() if row.ended()]
            monitor.sample({index: row.cpu_seconds() for index, row in running.items()})
            for index in ended:
                row = running.pop(index)
                _record(run, row, monitor.finish(index), stream)
    finally:
        for row in running.values():  # Ctrl-C or an error here: take the rows down with us
            row.kill()


def _record(
    run: CompareRun, row: RowProcess, contention: dict[str, Any] | None, stream: TextIO
) -> None:
    """Add the ended row to the record (in planned order), say how it went, save."""
    spec = row.spec
    record = {
        "label": spec.label,
        "kind": spec.kind,
        "method": spec.method,
        "seed": spec.workload.seed,
        "learning_rate": spec.learning_rate,
        "requested_options": spec.options,
        **row.result(),
        "contention": contention,
        "index": row.index,
    }
    run.rows.append(record)
    run.rows.sort(key=lambda each: each["index"])  # the planned order, whatever ended first
    if record["status"] == "failed":
        print(f"  {spec.label} failed: {record['error']}", file=stream, flush=True)
    else:
        seconds = record.get("row_seconds") or 0.0
        print(f"  {spec.label} done in {seconds:.0f} s", file=stream, flush=True)
    run.save()


def summary(run: CompareRun) -> str:
    """The terminal table and where the files are."""
    rows = by_label(run.rows)
    lines = ["", terminal_table(rows, metric_name(run.record)), "", *notes(rows)]
    lines += run.record.get("notes", [])
    if run.record["status"] != "complete":
        lines.append(
            f"run {run.record['status']}: {len(run.rows)} of "
            f"{len(run.record['planned'])} rows finished"
        )
    lines.append(f"report: {run.out / MARKDOWN_NAME}")
    lines.append(f"figures (JSON): {run.out / JSON_NAME}")
    if run.record.get("chart"):
        lines.append(f"chart: {run.out / CHART_NAME}")
    return "\n".join(lines)
