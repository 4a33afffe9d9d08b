"""Run one row in this process: the untrained model or a peftplug method. Returns its figures."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from torch import nn
from transformers import Trainer

import peftplug
from peftplug.errors import NotMergeableError
from peftplug.plugins import get_host
from peftplug.report import trainable_parameters
from peftplug.state import adapter_layers
from peftplug.workload.measure import (
    adapter_bytes,
    forward_call,
    interleaved_latency_ms,
    parameter_count,
    tensor_bytes,
)
from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask, load_task, with_shots
from peftplug.workload.training import (
    TrainingCost,
    build_trainer,
    train_measured,
    training_arguments,
)
from peftplug_compare.lr_search import SearchResult, TrainerFor, search_row
from peftplug_compare.spec import RowSpec


def parameter_figures(model: nn.Module, base: int) -> dict[str, Any]:
    """Trainable parameters as a count and a share of the base model; parameters added."""
    report = trainable_parameters(model)
    return {
        "base": base,
        "total": report.total,
        "trainable": report.trainable,
        "trainable_percent": 100.0 * report.trainable / base if base else 0.0,
        "added": report.total - base,
    }


Setting = Callable[[], AbstractContextManager[object]]


def latency_figures(
    task: LoadedTask,
    model: nn.Module,
    base: Setting | None,
    merge: Callable[[], str | None] | None,
    workload: Workload,
    base_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Median forward latency of the base, the adapted model unmerged and (if it merges) merged.

    ``base`` is the context in which ``model`` runs as its base (adapters off); ``None`` means
    ``model`` is the base. ``base_model`` replaces it where the base is another module (PEFT's
    prompt methods). ``merge`` folds the adapter in and returns ``None``, or says why it cannot.
    """
    batch = task.latency_batch(workload.batch_size)  # the training batch size: one fixed batch
    repeats = workload.latency_repeats
    adapted = forward_call(model, batch)
    figures: dict[str, Any] = {
        "batch_shape": list(batch["input_ids"].shape),
        "repeats": repeats,
        "weights_bytes": tensor_bytes(model),
        "merged_ms": None,
        "merge_note": None,
    }
    if base is None and base_model is None:
        figures["base_ms"] = interleaved_latency_ms(adapted, {"base": nullcontext}, repeats)["base"]
        return figures
    if base_model is not None:
        timed = interleaved_latency_ms(adapted, {"unmerged": nullcontext}, repeats)
        timed["base"] = interleaved_latency_ms(
            forward_call(base_model, batch), {"base": nullcontext}, repeats
        )["base"]
    else:
        timed = interleaved_latency_ms(adapted, {"base": base, "unmerged": nullcontext}, repeats)
    figures["base_ms"], figures["unmerged_ms"] = timed["base"], timed["unmerged"]
    reason = merge() if merge is not None else "cannot merge"
    if reason is None:
        figures["merged_ms"] = interleaved_latency_ms(adapted, {"merged": nullcontext}, repeats)[
            "merged"
        ]
        figures["weights_bytes_merged"] = tensor_bytes(model)
    else:
        figures["merge_note"] = reason
    for key in ("unmerged", "merged"):
        value = figures[f"{key}_ms"]
        figures[f"{key}_vs_base"] = value / figures["base_ms"] if value is not None else None
    return figures


def run_untrained(spec: RowSpec) -> dict[str, Any]:
    """The model as loaded (fresh task head): the zero-shot reference."""
    task = load_task(spec.workload)
    model = task.model.eval()
    base = parameter_count(model)
    return {
        "model": task.model_name,
        "data": task.data_name,
        "train_examples": len(task.train),
        "eval_examples": len(task.test),
        "parameters": {**parameter_figures(model, base), "trainable": 0, "trainable_percent": 0.0},
        "storage": {"adapter_bytes": None, "base_weights_bytes": tensor_bytes(model)},
        "training": None,
        "metric": task.evaluate(model),
        "inference": latency_figures(task, model, None, None, spec.workload),
    }


def run_in_context(spec: RowSpec) -> dict[str, Any]:
    """The untrained causal LM with ``shots`` training pairs before each held-out prompt."""
    workload = spec.workload
    task = with_shots(load_task(workload), workload.shots, workload.seed, workload.max_length)
    model = task.model.eval()
    base = parameter_count(model)
    return {
        "model": task.model_name,
        "data": task.data_name,
        "train_examples": workload.shots,
        "eval_examples": len(task.test),
        "parameters": {**parameter_figures(model, base), "trainable": 0, "trainable_percent": 0.0},
        "storage": {"adapter_bytes": None, "base_weights_bytes": tensor_bytes(model)},
        "training": None,
        "metric": task.evaluate(model),
        "inference": latency_figures(task, model, None, None, workload),
    }


def _peftplug_merge(model: nn.Module) -> Callable[[], str | None]:
    def merge() -> str | None:
        if not any(True for _ in adapter_layers(model)):
            return "trains the model's own weights in place: nothing to merge"
        try:
            peftplug.merge(model)
        except NotMergeableError as error:
            return str(error)
        return None

    return merge


@dataclasses.dataclass
class TrainedRow:
    """A row's model after training at its (searched) rate, with what that took."""

    model: nn.Module
    learning_rate: float
    search: SearchResult | None
    parameters: dict[str, Any]
    cost: TrainingCost

    def figures(self) -> dict[str, Any]:
        """The row's rate, search, parameter and training figures."""
        return {
            "learning_rate": self.learning_rate,
            "lr_search": self.search.figures() if self.search else None,
            "parameters": self.parameters,
            "training": self.cost.figures(),
        }


def train_row(spec: RowSpec, task: LoadedTask, trainer_for: TrainerFor, base: int) -> TrainedRow:
    """Search the rate (where the plan asks for it), then train with the full budget."""
    assert spec.learning_rate is not None, "the plan gives every trained row a rate"
    search = search_row(spec, task, trainer_for) if spec.search_learning_rate else None
    learning_rate = search.chosen if search else spec.learning_rate
    with tempfile.TemporaryDirectory() as scratch:
        trainer = trainer_for(task, learning_rate, scratch, spec.workload)
        model = trainer.model
        parameters = parameter_figures(model, base)
        cost = train_measured(trainer)
    return TrainedRow(model, learning_rate, search, parameters, cost)


def run_method(spec: RowSpec) -> dict[str, Any]:
    """Train ``spec.method`` with the shared budget; evaluate, save and time it."""
    assert spec.method and spec.learning_rate and spec.adapter_dir, "the runner sets these"
    method = get_host().method(spec.method)
    resolved = method.parse_config(spec.options)  # a bad option fails here, before loading
    task = load_task(spec.workload)
    base = parameter_count(task.model)

    def trainer_for(run: LoadedTask, rate: float, scratch: str, workload: Workload) -> Trainer:
        plugins, config = [spec.method], {spec.method: resolved}
        args = training_arguments(workload, scratch, rate, plugins=plugins, config=config)
        return build_trainer(run, args, f"{spec.label} @ {rate:.2g}", peftplug_methods=True)

    trained = train_row(spec, task, trainer_for, base)
    model = trained.model
    metric = task.evaluate(model)
    adapter_dir = peftplug.save_adapter(model, spec.adapter_dir)
    inference = latency_figures(
        task,
        model.eval(),
        lambda: peftplug.disable_adapters(model),
        _peftplug_merge(model),
        spec.workload,
    )
    return {
        "model": task.model_name,
        "data": task.data_name,
        "train_examples": len(task.train),
        "eval_examples": len(task.test),
        "distribution": method.distribution,
        "version": method.version,
        "options": resolved.to_dict(),
        **trained.figures(),
        "storage": {"adapter_bytes": adapter_bytes(adapter_dir), "adapter_dir": str(adapter_dir)},
        "metric": metric,
        "inference": inference,
    }
