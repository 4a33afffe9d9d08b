"""One row running in a process of its own: start it, follow its CPU time, read its result."""

from __future__ import annotations

import json
import multiprocessing
import signal
from pathlib import Path
from typing import Any

from peftplug_compare.contention import process_cpu_seconds
from peftplug_compare.spec import RowSpec
from peftplug_compare.worker import write_row_result


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


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)


class RowProcess:
    """A row's process, started on construction (the first also starts the fork server)."""

    def __init__(
        self, spec: RowSpec, scratch: Path, index: int, threads: int | None, quiet: bool
    ) -> None:
        self.spec, self.index = spec, index
        self.result_file = scratch / f"row{index}.json"
        self.process = _row_context().Process(
            target=write_row_result, args=(spec, self.result_file, threads, quiet), daemon=True
        )
        self.process.start()
        self._result: dict[str, Any] | None = None

    @property
    def sentinel(self) -> int:
        """Readable once the process has ended (``multiprocessing.connection.wait``)."""
        return self.process.sentinel

    def ended(self) -> bool:
        """Whether the process has exited."""
        return not self.process.is_alive()

    def cpu_seconds(self) -> float | None:
        """CPU time so far; an ended row's own count from its result."""
        if self.ended():
            return self.result().get("cpu_seconds")
        return process_cpu_seconds(self.process.pid)

    def kill(self) -> None:
        """Take the process down (Ctrl-C in the parent)."""
        self.process.kill()
        self.process.join()

    def result(self) -> dict[str, Any]:
        """The row's figures once it has ended, or why it has none."""
        if self._result is None:
            self.process.join()
            self._result = self._read()
        return self._result

    def _read(self) -> dict[str, Any]:
        if self.result_file.is_file():
            return json.loads(self.result_file.read_text())
        code = self.process.exitcode or 0
        if code < 0:
            why = f"killed by {_signal_name(code)}"
            if -code == signal.SIGKILL:
                why += (
                    " (usually the kernel's out-of-memory killer: lower --batch-size or "
                    "--max-length)"
                )
        else:
            why = f"exited with code {code}"
        return {"status": "failed", "error": f"the row's process {why} before writing a result"}
