"""``peftplug train``: one method on the user's data, from a JSON/YAML file and/or flags."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import yaml

import peftplug
from peftplug.commands.arguments import FILE_KEYS, parse_assignment, parse_value, workload_from
from peftplug.commands.export_inputs import refuse_non_empty
from peftplug.errors import ConfigError
from peftplug.plugins import get_host
from peftplug.workload.tasks import load_task
from peftplug.workload.training import build_trainer, train_measured, training_arguments


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping in a ``.json``, ``.yaml`` or ``.yml`` file, with only known keys."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config-file {path}: no such file")
    text = file.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"--config-file {path} cannot be parsed: {_one_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config-file {path} must hold a mapping of keys to values")
    unknown = sorted(set(values) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"--config-file {path}: unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(FILE_KEYS)}"
        )
    return values


def _one_line(error: Exception) -> str:
    """A parser's error in one line: YAML's own message spans several, with a caret drawing."""
    mark = getattr(error, "problem_mark", None)
    if isinstance(error, yaml.MarkedYAMLError) and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return " ".join(str(error).split())


def settings_from(arguments: argparse.Namespace) -> argparse.Namespace:
    """The file's values under the flags that were given."""
    values = read_config_file(arguments.config_file) if arguments.config_file else {}
    merged = argparse.Namespace(**vars(arguments))
    for key, value in values.items():
        if key != "options" and getattr(merged, key, None) is None:
            setattr(merged, key, value)
    merged.task = merged.task or "classification"
    merged.seed = 0 if merged.seed is None else merged.seed
    options = dict(values.get("options") or {})
    for item in arguments.option or []:
        name, value = parse_assignment(item, "--option")
        options[name] = parse_value(value)
    merged.options = options
    if not merged.method:
        raise ConfigError("name the method: --method lora (or `method: lora` in --config-file)")
    if not merged.out:
        raise ConfigError("say where to save the adapter: --out DIR (or `out:` in --config-file)")
    refuse_non_empty(Path(merged.out), merged.overwrite)  # before training, not after
    if merged.learning_rate is not None and not merged.learning_rate > 0:
        raise ConfigError(
            f"--lr must be a positive learning rate, got {merged.learning_rate}; leave it out "
            "for the method's default"
        )
    return merged


def run_train(arguments: argparse.Namespace, stream: TextIO | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out split, save the adapter; returns the figures.

    What reading the data did (rows dropped, classes found) is printed first, to ``stream``
    (standard output by default).
    """
    settings = settings_from(arguments)
    spec = get_host().method(settings.method)
    config = spec.parse_config(settings.options)
    learning_rate = settings.learning_rate
    if learning_rate is None:
        learning_rate = spec.comparison_defaults.learning_rate
    workload = workload_from(settings)
    task = load_task(workload)
    for note in task.data_notes:
        print(f"data: {note}", file=stream or sys.stdout, flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(
            workload, scratch, learning_rate, plugins=[spec.name], config={spec.name: config}
        )
        trainer = build_trainer(task, args, spec.name, peftplug_methods=True)
        cost = train_measured(trainer)
    metric = task.evaluate(task.model)
    directory = peftplug.save_adapter(task.model, settings.out, metrics=metric)
    return {
        "method": spec.name,
        "options": config.to_dict(),
        "learning_rate": learning_rate,
        "model": task.model_name,
        "adapter": str(directory),
        "metric": metric,
        "training": cost.figures(),
        "trainable": peftplug.trainable_parameters(task.model).trainable,
    }


def held_out_text(metric: dict[str, Any]) -> str:
    """``accuracy 0.7120 [0.6700, 0.7510]`` (or the loss and perplexity): for one-line reports."""
    interval = metric.get("interval")
    spread = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
    if "accuracy" in metric:
        return f"accuracy {metric['accuracy']:.4f}{spread}"
    return f"loss {metric['loss']:.4f}{spread}, perplexity {metric['perplexity']:.2f}"
