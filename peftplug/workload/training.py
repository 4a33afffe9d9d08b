"""One training run through the stock Trainer, with a progress bar and measured cost."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

import peftplug
from peftplug.errors import ConfigError
from peftplug.workload.measure import peak_memory
from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask

# transformers' LengthGroupedSampler sorts mega-batches of 50 batches by length: with fewer than
# 4 mega-batches of data, every epoch would repeat nearly the same batches in the same order.
GROUPED_BATCHES = 4 * 50


class ProgressBar(TrainerCallback):
    """A tqdm bar over the training steps, labelled with the row, showing the latest loss."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.bar = tqdm(
            total=state.max_steps,
            desc=f"{self.label:<14}",
            unit="step",
            leave=True,
            # tqdm reads TQDM_DISABLE once, when imported: a process that sets it later (compare's
            # rows side by side, forked with tqdm imported) is heard here
            disable=os.environ.get("TQDM_DISABLE", "") not in ("", "0"),
        )

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.bar is not None:
            self.bar.close()


@dataclasses.dataclass(frozen=True)
class TrainingCost:
    """What one training run took, measured."""

    seconds: float
    steps: int
    examples: int
    tokens: int
    peak_rss_mb: float
    rss_before_mb: float
    memory_delta_mb: float
    peak_reset: bool
    final_loss: float | None

    def figures(self) -> dict[str, Any]:
        """The JSON form, with throughputs."""
        values = dataclasses.asdict(self)
        values["seconds_per_step"] = self.seconds / max(self.steps, 1)
        values["examples_per_second"] = self.examples / self.seconds if self.seconds else None
        values["tokens_per_second"] = self.tokens / self.seconds if self.seconds else None
        return values


def training_arguments(
    workload: Workload,
    output_dir: str | Path,
    learning_rate: float,
    *,
    plugins: list[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> TrainingArguments:
    """The same budget and schedule for every row; ``plugins`` makes them ``PeftArguments``."""
    common: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=workload.steps,
        per_device_train_batch_size=workload.batch_size,
        learning_rate=learning_rate,
        warmup_steps=int(workload.steps * workload.warmup_ratio),
        lr_scheduler_type="linear",
        logging_steps=max(workload.steps // 10, 1),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=workload.seed,
        data_seed=workload.seed,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        dataloader_drop_last=True,  # every step sees a full batch: examples = steps x batch
        # batches of similar lengths, in random order: short texts padded to the batch's longest
        # cost a step up to twice what they need (review snippets: 0.45 s against 0.26 s a step);
        # build_trainer falls back to plain shuffling where the data is too small to group
        train_sampling_strategy="group_by_length",
    )
    if plugins is None:
        return TrainingArguments(**common)
    return peftplug.PeftArguments(**common, peft_plugins=plugins, peft_config=dict(config or {}))


def build_trainer(
    task: LoadedTask, args: TrainingArguments, label: str, *, peftplug_methods: bool
) -> Trainer:
    """The stock Trainer over the task's data; peftplug's kwargs when it applies the methods."""
    if len(task.train) < args.per_device_train_batch_size:
        raise ConfigError(
            f"only {len(task.train)} training examples for batches of "
            f"{args.per_device_train_batch_size}: lower --batch-size or give more data"
        )
    if len(task.train) < GROUPED_BATCHES * args.per_device_train_batch_size:
        args = dataclasses.replace(args, train_sampling_strategy="random")
    extra: dict[str, Any] = peftplug.trainer_kwargs() if peftplug_methods else {"callbacks": []}
    extra["callbacks"] = [*extra["callbacks"], ProgressBar(label)]
    trainer = Trainer(
        model=task.model, args=args, train_dataset=task.train, data_collator=task.collate, **extra
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the loss; no log dicts on stdout
    return trainer


def train_measured(trainer: Trainer) -> TrainingCost:
    """Run ``trainer.train()`` and measure its wall time, throughput and peak memory."""
    with peak_memory() as memory:
        started = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - started
    state = trainer.state
    return TrainingCost(
        seconds=seconds,
        steps=state.global_step,
        examples=state.global_step * trainer.args.per_device_train_batch_size,
        tokens=int(state.num_input_tokens_seen),
        peak_rss_mb=float(memory["peak_mb"]),
        rss_before_mb=float(memory["before_mb"]),
        memory_delta_mb=float(memory["delta_mb"]),
        peak_reset=bool(memory["reset"]),
        final_loss=output.training_loss if output is not None else None,
    )
