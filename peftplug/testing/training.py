"""Short real training runs through the stock Trainer, as method plugins' tests need them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from transformers import Trainer

import peftplug


def stock_trainer(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    output_dir: str | Path,
    methods: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> Trainer:
    """A stock ``Trainer`` on the CPU, seeded, saving nothing, with peftplug's callback.

    ``methods`` (name -> options) are applied by the Trainer integration; leave it out when
    the model already carries its methods. ``options`` are further ``TrainingArguments``.
    """
    defaults: dict[str, Any] = {
        "save_strategy": "no", "report_to": [], "use_cpu": True, "disable_tqdm": True,
        "seed": 0, "lr_scheduler_type": "linear",
    }
    if methods:
        defaults.update(peft_plugins=list(methods), peft_config=methods)
    args = peftplug.PeftArguments(output_dir=str(output_dir), **{**defaults, **options})
    return Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collate,
        **peftplug.trainer_kwargs(),
    )


def majority_share(labels: Sequence[int]) -> float:
    """The accuracy of always answering the most frequent label."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(counts.values()) / len(labels)
