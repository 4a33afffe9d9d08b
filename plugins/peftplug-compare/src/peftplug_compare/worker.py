"""Run one row in a child process of its own, and write its figures to a file.

A fresh process per row keeps peak-memory figures honest and keeps one row's crash (out of
memory, a native error) from taking the others down. The runner forks it from a server that
has imported this module (torch, transformers and the plugins) but run nothing, which saves
the ~20 s each import costs.
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from peftplug.atomic import atomic_write_files
from peftplug.errors import PeftplugError
from peftplug_compare.peft_rows import run_peft
from peftplug_compare.rows import run_in_context, run_method, run_untrained
from peftplug_compare.spec import RowSpec

RUNNERS = {
    "untrained": run_untrained,
    "in-context": run_in_context,
    "method": run_method,
    "peft": run_peft,
}


def run_row(spec: RowSpec) -> dict[str, Any]:
    """The row's figures, or its error as a message (and the traceback for unexpected ones)."""
    started = time.perf_counter()
    try:
        result = {"status": "ok", "error": None, **RUNNERS[spec.kind](spec)}
    except Exception as error:  # the row reports it; the comparison goes on
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if not isinstance(error, PeftplugError | ValueError):
            result["traceback"] = traceback.format_exc()
    result["row_seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time()  # every thread of this process since its fork
    return result


def write_row_result(
    spec: RowSpec, result_path: Path, threads: int | None = None, quiet: bool = False
) -> None:
    """The child process's job: run the row quietly and write its result atomically.

    ``threads`` sets torch's thread count (rows side by side share the cores); ``quiet`` turns
    the progress bars off (bars of rows side by side would overwrite each other).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it kills us
    if threads is not None:
        torch.set_num_threads(threads)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # training.ProgressBar reads it for each bar
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecations, not ours
    result = run_row(spec)
    atomic_write_files({result_path: (json.dumps(result, indent=2) + "\n").encode()})
