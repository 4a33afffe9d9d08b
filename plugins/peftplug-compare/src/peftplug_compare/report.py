"""The comparison's files: every figure as JSON, and a Markdown report; written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftplug.atomic import atomic_write_files
from peftplug.portable import portable_json
from peftplug_compare.seeds import by_label
from peftplug_compare.table import best_row, cells, headers, notes

JSON_NAME = "compare.json"
MARKDOWN_NAME = "compare.md"
CHART_NAME = "compare.png"


def metric_name(record: dict[str, Any]) -> str:
    """``accuracy`` or ``loss``: what the held-out column holds."""
    return "accuracy" if record["workload"]["task"] == "classification" else "loss"


def _side_by_side(machine: dict[str, Any]) -> str:
    jobs, threads = machine.get("jobs", 1), machine.get("threads_per_row")
    if jobs == 1:
        return "one row at a time"
    return f"{jobs} rows side by side, {threads} thread(s) each"


def _escaped(note: str) -> str:
    """A note for a Markdown list: a leading ``*`` would start a nested list."""
    return "\\" + note if note.startswith("*") else note


def _rates(row: dict[str, Any]) -> str:
    """The learning rate; under several seeds each seed's, when the search chose differently."""
    rates = row.get("learning_rates") or [row.get("learning_rate")]
    known = [rate for rate in rates if rate is not None]
    return "/".join(f"{rate:g}" for rate in dict.fromkeys(known)) or "-"


def markdown(record: dict[str, Any]) -> str:
    """The report: settings, the table, errors, and how each figure was measured."""
    workload, environment = record["workload"], record["environment"]
    rows = by_label(record["rows"])
    first = next((r for r in rows if r.get("status") == "ok"), {})
    lines = [
        "# peftplug compare",
        "",
        f"- command: `{environment['command']}`",
        f"- started: {environment['started']}; status: {record['status']}",
        f"- model: {first.get('model', workload['model'] or 'shipped')}",
        f"- data: {first.get('data', workload['data'] or 'shipped')} "
        f"({first.get('train_examples', '?')} train / {first.get('eval_examples', '?')} held out)",
        f"- budget: {workload['steps']} steps of batch {workload['batch_size']}, max length "
        f"{workload['max_length']}, seed {workload['seed']}, linear schedule with "
        f"{workload['warmup_ratio']:.0%} warm-up, AdamW",
        f"- machine: {environment['machine']['cpu']}, {environment['machine']['cores_available']} "
        f"cores; {_side_by_side(environment['machine'])}; torch "
        f"{environment['packages']['torch']}, transformers "
        f"{environment['packages']['transformers']}",
        "",
    ]
    titles = headers(metric_name(record)) + ["lr"]
    lines.append("| " + " | ".join(titles) + " |")
    lines.append("|" + "---|" * len(titles))
    best = best_row(rows)
    for row in rows:
        lines.append("| " + " | ".join([*cells(row, best), _rates(row)]) + " |")
    lines += ["", *(f"- {_escaped(note)}" for note in [*notes(rows), *record.get("notes", [])])]
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed rows", ""]
        lines += [f"- **{r['label']}**: {r.get('error')}" for r in failed]
    if record.get("chart"):
        lines += ["", f"![accuracy, memory and latency]({record['chart']})"]
    lines += ["", "## How each figure is measured", "", *MEASUREMENT_NOTES]
    return "\n".join(lines) + "\n"


MEASUREMENT_NOTES = [
    "- Every row runs in its own fresh process with the same data order and seed. Rows side by "
    "side (`--jobs`) share the cores: each row's s/step and latency are those of its share, the "
    "same for every row; latency ratios to the base are timed in turns within the row.",
    "- trainable params: parameters with `requires_grad` after the method is applied; the "
    "percentage is of the base model's parameters.",
    "- adapter bytes: size of `adapter_config.json` + `adapter_model.safetensors` as saved.",
    "- s/step, tokens/s, train s: wall time of `Trainer.train()`; tokens are the non-padding "
    "input tokens the Trainer counted.",
    "- peak train MB: the process's peak resident set (VmHWM) during training, reset just "
    "before it; +delta is that peak minus the resident set when training started.",
    "- held-out: the figure and its 95% interval: Wilson's score interval for an accuracy, a "
    "percentile bootstrap over held-out examples (2,000 resamples) for a per-token loss. Rows "
    "whose intervals overlap are not told apart by this evaluation.",
    "- latency: median of repeated eval-mode forward passes of one fixed held-out batch, taking "
    "turns with the base model (adapters disabled) in the same process; merged where the "
    "method can fold its update into the weights.",
]


def write_reports(out: Path, record: dict[str, Any]) -> None:
    """Write the JSON record and the Markdown report together, atomically.

    Paths in them are made portable (``portable_json``): relative to ``out`` when inside it.
    """
    record = portable_json(record, out)
    atomic_write_files(
        {
            out / JSON_NAME: (json.dumps(record, indent=2) + "\n").encode(),
            out / MARKDOWN_NAME: markdown(record).encode(),
        }
    )
