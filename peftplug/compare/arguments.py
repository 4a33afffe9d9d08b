"""Command-line options shared by ``peftplug compare`` and ``peftplug train``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import yaml

from peftplug.compare.options import TASKS, Workload
from peftplug.errors import ConfigError

# Per-task budget when the user sets nothing: a few minutes for the whole default comparison.
TASK_DEFAULTS: dict[str, dict[str, int]] = {
    "classification": {"steps": 80, "batch_size": 16, "max_length": 64},
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


def parse_overrides(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["m.r=16", "m.target_modules=[query,value]"]`` -> ``{"m": {"r": 16, ...}}``."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, value = parse_assignment(item, "--config")
        method, dot, option = key.partition(".")
        if not dot or not option:
            raise ConfigError(
                f"--config {item!r}: name the method and the option, e.g. --config lora.r=16"
            )
        overrides.setdefault(method, {})[option] = parse_value(value)
    return overrides


def parse_learning_rates(items: Sequence[str] | None) -> dict[str, float]:
    """``["m=5e-4"]`` -> ``{"m": 0.0005}``."""
    rates: dict[str, float] = {}
    for item in items or []:
        method, value = parse_assignment(item, "--lr")
        try:
            rates[method] = float(value)
        except ValueError:
            raise ConfigError(
                f"--lr {item!r}: {value!r} is not a number; e.g. --lr lora=5e-4"
            ) from None
        if rates[method] <= 0:
            raise ConfigError(f"--lr {item!r}: a learning rate must be positive")
    return rates


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
        help="training steps per method (default: 80 classification, 20 causal-lm)",
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


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``peftplug compare`` option."""
    add_workload_arguments(parser)
    parser.add_argument("--methods", help="comma-separated methods (default: every installed one)")
    parser.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="leave out the full and head-only fine-tuning rows unless named",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="METHOD.OPTION=VALUE",
        help="override a method option, e.g. --config lora.r=16 (repeatable)",
    )
    parser.add_argument(
        "--lr",
        action="append",
        metavar="METHOD=RATE",
        help="fix a method's learning rate (no search for it), e.g. --lr lora=5e-4",
    )
    parser.add_argument(
        "--no-lr-search",
        dest="lr_search",
        action="store_false",
        help="train at each method's declared rate instead of searching around it on a "
        "validation split (three quarter-budget trials per row)",
    )
    parser.add_argument(
        "--vs-peft",
        action="store_true",
        help="add HF PEFT's LoRA, prompt, P-tuning and prefix tuning rows",
    )
    parser.add_argument(
        "--latency-repeats", type=int, default=5, help="forward passes timed per variant (median)"
    )
    parser.add_argument(
        "--shots",
        type=int,
        default=4,
        help="causal LM: training pairs put before each held-out prompt in the in-context "
        "row (0 leaves the row out)",
    )
    parser.add_argument(
        "--out",
        default="peftplug-compare",
        help="directory for compare.json, compare.md, compare.png and adapters",
    )


EXPORT_FORMATS = ("peftplug", "peft", "merged")


def method_list(text: str | None) -> list[str] | None:
    """``"m1,m2"`` -> ``["m1", "m2"]``."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError("--methods is empty: name methods like --methods lora,bitfit")
    return names


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
