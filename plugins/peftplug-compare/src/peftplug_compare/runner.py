"""Run the planned rows one by one, each in a fresh process, writing the reports after each."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from peftplug.workload.options import Workload
from peftplug_compare.chart import write_chart
from peftplug_compare.contention import contention, read_cpu_counters
from peftplug_compare.environment import describe_environment
from peftplug_compare.report import CHART_NAME, JSON_NAME, MARKDOWN_NAME, metric_name, write_reports
from peftplug_compare.seeds import by_label
from peftplug_compare.spec import RowSpec
from peftplug_compare.table import notes, terminal_table
from peftplug_compare.worker import write_row_result

FORMAT = "peftplug-compare"
FORMAT_VERSION = 1


def _row_context() -> multiprocessing.context.BaseContext:
    """Where rows' processes come from: a fork server that imported the worker once.

    Children forked from it start with torch, transformers and the plugins imported, which
    saves the ~20 s each import costs. They are not forked from this process, which may have
    run torch already: a child forked after OpenMP started its threads can hang in its first
    parallel region. Where there are no fork servers (Windows), rows are spawned.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([write_row_result.__module__])
    return context


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


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)


def run_row_process(spec: RowSpec, scratch: Path, index: int) -> dict[str, Any]:
    """Run one row in a child process of its own and read back its result, with how busy the
    machine was meanwhile (``contention``)."""
    result_file = scratch / f"row{index}.json"
    process = _row_context().Process(target=write_row_result, args=(spec, result_file), daemon=True)
    process.start()  # the first start also starts the fork server: not the row's, nor others'
    before = read_cpu_counters()
    try:
        process.join()
    except BaseException:  # Ctrl-C or another signal: take the row's process down with us
        process.kill()
        process.join()
        raise
    after = read_cpu_counters()
    code = process.exitcode or 0
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        result["contention"] = contention(before, after, result.get("cpu_seconds"))
        return result
    if code < 0:
        why = f"killed by {_signal_name(code)}"
        if -code == signal.SIGKILL:
            why += (
                " (usually the kernel's out-of-memory killer: lower --batch-size or --max-length)"
            )
    else:
        why = f"exited with code {code}"
    return {"status": "failed", "error": f"the row's process {why} before writing a result"}


def run_compare(
    workload: Workload,
    specs: list[RowSpec],
    out: Path,
    argv: list[str],
    stream: TextIO | None = None,
) -> CompareRun:
    """Measure every row; the reports are rewritten after each, so an interrupted run keeps
    the finished rows (status ``interrupted``). Re-raises ``KeyboardInterrupt`` after saving.

    Progress goes to ``stream``, by default the standard output at the time of the call.
    """
    stream = stream or sys.stdout
    out.mkdir(parents=True, exist_ok=True)
    run = CompareRun(
        out,
        workload,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "running",
            "workload": workload.to_dict(),
            "environment": describe_environment(argv),
            "planned": [spec.label for spec in specs],
            "rows": [],
            "chart": None,
        },
    )
    run.save()
    with tempfile.TemporaryDirectory(prefix="peftplug-compare-") as scratch:
        try:
            for index, spec in enumerate(specs):
                print(f"[{index + 1}/{len(specs)}] {spec.label}", file=stream, flush=True)
                result = run_row_process(spec, Path(scratch), index)
                row = {
                    "label": spec.label,
                    "kind": spec.kind,
                    "method": spec.method,
                    "seed": spec.workload.seed,
                    "learning_rate": spec.learning_rate,
                    "requested_options": spec.options,
                    **result,
                }
                run.rows.append(row)
                if row["status"] == "failed":
                    print(f"  {spec.label} failed: {row['error']}", file=stream, flush=True)
                run.save()
        except KeyboardInterrupt:
            run.record["status"] = "interrupted"
            run.save()
            print(summary(run), file=stream, flush=True)
            raise
    run.record["status"] = "complete"
    run.save()
    print(summary(run), file=stream, flush=True)
    return run


def summary(run: CompareRun) -> str:
    """The terminal table and where the files are."""
    rows = by_label(run.rows)
    lines = ["", terminal_table(rows, metric_name(run.record)), "", *notes(rows)]
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
