"""Command-line options shared by ``peftplug compare`` and ``peftplug train``."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from peftplug.errors import ConfigError
from peftplug.workload.options import TASKS, Workload

# Per-task budget when the user sets nothing: a few minutes for the whole default comparison.
TASK_DEFAULTS: dict[str, dict[str, int]] = {
    "classification": {"steps": 72, "batch_size": 16, "max_length": 64},
    "causal-lm": {"steps": 20, "batch_size": 4, "max_length": 128},
}


def parse_value(text: str) -> Any:
    """A command-line value: JSON first (numbers like 1e-3), then YAML (``[query, value]``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text)


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    """``NAME=VALUE`` split once, or an error showing the expected form."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise ConfigError(f"{flag} {text!r}: write it as NAME=VALUE, e.g. {flag} lora.r=16")
    return name.strip(), value


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """Task, model, data and budget options."""
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="classification",
        help="classification (shipped encoder, review snippets) or causal-lm "
        "(shipped SmolLM2, question/answer pairs)",
    )
    parser.add_argument("--model", help="a local transformers model directory (default: shipped)")
    parser.add_argument(
        "--data",
        help="a .csv or .jsonl file with text,label (classification) "
        "or prompt,completion (causal-lm) columns (default: shipped)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="training steps per method (default: 72 classification, 20 causal-lm)",
    )
    parser.add_argument("--batch-size", type=int, help="default: 16 classification, 4 causal-lm")
    parser.add_argument("--max-length", type=int, help="tokens per example (default: 64 / 128)")
    parser.add_argument(
        "--eval-size",
        type=int,
        help="held-out examples (default: 500 reviews, 200 QA pairs, "
        "a fifth of --data up to those)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split, head and data order"
    )


def workload_from(
    arguments: argparse.Namespace, latency_repeats: int = 5, shots: int = 0
) -> Workload:
    """The workload the options describe, with the task's defaults filled in."""
    defaults = TASK_DEFAULTS[arguments.task]
    values = {
        key: getattr(arguments, key) if getattr(arguments, key) is not None else default
        for key, default in defaults.items()
    }
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    if arguments.eval_size is not None and arguments.eval_size < 1:
        raise ConfigError(f"--eval-size must be at least 1, got {arguments.eval_size}")
    return Workload(
        task=arguments.task,
        model=arguments.model,
        data=arguments.data,
        seed=arguments.seed,
        eval_size=arguments.eval_size,
        latency_repeats=latency_repeats,
        shots=shots,
        **values,
    )


EXPORT_FORMATS = ("peftplug", "peft", "merged")


# Keys a config file may hold: the flags' names (with underscores) plus the method's options.
FILE_KEYS = (
    "method",
    "options",
    "learning_rate",
    "out",
    "task",
    "model",
    "data",
    "steps",
    "batch_size",
    "max_length",
    "eval_size",
    "seed",
)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``peftplug train`` option; flags win over the config file."""
    parser.add_argument("--config-file", help="JSON or YAML with any of: " + ", ".join(FILE_KEYS))
    parser.add_argument("--method", help="the method to train (`peftplug plugins` lists them)")
    parser.add_argument(
        "--option",
        action="append",
        metavar="OPTION=VALUE",
        help="a method option, e.g. --option r=16 (repeatable)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        dest="learning_rate",
        help="learning rate (default: the method's comparison default)",
    )
    parser.add_argument("--out", help="directory the adapter is saved to")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an adapter already in --out"
    )
    add_workload_arguments(parser)
    parser.set_defaults(task=None, seed=None)
