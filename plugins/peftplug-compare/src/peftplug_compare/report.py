"""The comparison's files: every figure as JSON, and a Markdown report; written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftplug.atomic import atomic_write_files
from peftplug.portable import portable_json
from peftplug_compare.table import below_majority, cells, headers

JSON_NAME = "compare.json"
MARKDOWN_NAME = "compare.md"
CHART_NAME = "compare.png"


def metric_name(record: dict[str, Any]) -> str:
    """``accuracy`` or ``loss``: what the held-out column holds."""
    return "accuracy" if record["workload"]["task"] == "classification" else "loss"


def markdown(record: dict[str, Any]) -> str:
    """The report: settings, the table, errors, and how each figure was measured."""
    workload, environment = record["workload"], record["environment"]
    rows = record["rows"]
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
        f"cores; torch {environment['packages']['torch']}, transformers "
        f"{environment['packages']['transformers']}",
        "",
    ]
    titles = headers(metric_name(record)) + ["lr"]
    lines.append("| " + " | ".join(titles) + " |")
    lines.append("|" + "---|" * len(titles))
    for row in rows:
        rate = row.get("learning_rate")
        lines.append("| " + " | ".join([*cells(row), "-" if rate is None else f"{rate:g}"]) + " |")
    stuck = below_majority(rows)
    if stuck:
        lines += [
            "",
            f"\\* did not beat the majority class at this budget: {', '.join(stuck)} (the 95% "
            "interval reaches down to always answering the commonest class); a larger "
            "`--steps` or another `--lr` may help",
        ]
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed rows", ""]
        lines += [f"- **{r['label']}**: {r.get('error')}" for r in failed]
    if record.get("chart"):
        lines += ["", f"![accuracy, memory and latency]({record['chart']})"]
    lines += ["", "## How each figure is measured", "", *MEASUREMENT_NOTES]
    return "\n".join(lines) + "\n"


MEASUREMENT_NOTES = [
    "- Every row runs in its own fresh process with the same data order and seed.",
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
