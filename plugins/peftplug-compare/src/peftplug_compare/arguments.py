"""``peftplug compare``'s command-line options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from peftplug.commands.arguments import add_workload_arguments, parse_assignment, parse_value
from peftplug.errors import ConfigError


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
        "validation split (three trials of an eighth of the budget per row)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        help="rows run side by side, each in its own process with the cores shared out "
        "(default: 2 with two cores or more, else 1)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run every row under N seeds (--seed onwards: split, head, data order) and "
        "report mean ± spread",
    )
    parser.add_argument(
        "--vs-peft",
        action="store_true",
        help="add HF PEFT's LoRA, prompt, P-tuning and prefix tuning rows",
    )
    parser.add_argument(
        "--latency-repeats", type=int, default=3, help="forward passes timed per variant (median)"
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


def method_list(text: str | None) -> list[str] | None:
    """``"m1,m2"`` -> ``["m1", "m2"]``."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError("--methods is empty: name methods like --methods lora,bitfit")
    return names
