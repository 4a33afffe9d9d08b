"""The ``peftplug compare`` subcommand: options, then plan, run and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftplug.commands.arguments import workload_from
from peftplug.errors import PeftplugError
from peftplug_compare import arguments as compare_arguments


def add_compare_command(commands: argparse._SubParsersAction) -> None:
    """``peftplug compare`` with every option."""
    compare = commands.add_parser(
        "compare", help="train and measure every installed method side by side"
    )
    compare_arguments.add_compare_arguments(compare)
    compare.set_defaults(run=run_compare_command)


def run_compare_command(arguments: argparse.Namespace) -> int:
    """Check the input once, plan the rows, run them; 1 when every row failed."""
    from peftplug.workload.model_dirs import check_model_dir
    from peftplug.workload.prepared_data import prepare_data
    from peftplug_compare.lr_search import search_off_reason
    from peftplug_compare.plan import plan_rows
    from peftplug_compare.runner import default_jobs, run_compare

    if arguments.latency_repeats < 1:
        raise PeftplugError(
            f"--latency-repeats must be at least 1, got {arguments.latency_repeats}"
        )
    if arguments.shots < 0:
        raise PeftplugError(f"--shots must be 0 or more, got {arguments.shots}")
    workload = workload_from(arguments, arguments.latency_repeats, arguments.shots)
    if workload.model is not None:
        check_model_dir(workload.model)
    for note in prepare_data(workload).notes:  # bad data fails here, not in every row
        print(f"data: {note}", flush=True)
    out = Path(arguments.out)
    if out.exists() and not out.is_dir():
        raise PeftplugError(f"--out {out} is a file: name a directory for the reports")
    rows = plan_rows(
        workload,
        out,
        methods=compare_arguments.method_list(arguments.methods),
        overrides=compare_arguments.parse_overrides(arguments.config),
        learning_rates=compare_arguments.parse_learning_rates(arguments.lr),
        baselines=arguments.baselines,
        vs_peft=arguments.vs_peft,
        lr_search=arguments.lr_search,
        seeds=arguments.seeds,
    )
    jobs = arguments.jobs if arguments.jobs is not None else default_jobs()
    if jobs < 1:
        raise PeftplugError(f"--jobs must be at least 1, got {jobs}")
    search_off = search_off_reason(workload.steps) if arguments.lr_search else None
    remarks = [search_off] if search_off else []
    for remark in remarks:
        print(remark, flush=True)
    run = run_compare(workload, rows, out, arguments.argv, jobs=jobs, remarks=remarks)
    if run.rows and all(row["status"] == "failed" for row in run.rows):
        print(
            f"peftplug compare: error: every row failed (see {out}); the first: "
            f"{run.rows[0].get('error')}",
            file=sys.stderr,
        )
        return 1
    return 0
