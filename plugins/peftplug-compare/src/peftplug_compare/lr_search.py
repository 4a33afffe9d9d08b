"""A fair learning rate per row: short trials around the method's own rate, on validation data.

Each candidate trains a fresh copy of the model for a quarter of the budget on the training
split less a validation part carved from it (never the held-out set), and is scored on that
part by its loss (``validation_score``). The best score wins; ties keep the rate nearer the
centre, the plugin's declared rate.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from transformers import Trainer

from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask
from peftplug_compare.spec import RowSpec

SPREAD = math.sqrt(10)  # candidates a half-decade apart: centre / 3.16, centre, centre * 3.16
TRIAL_SHARE = 4  # a trial runs steps // TRIAL_SHARE steps (at least MIN_TRIAL_STEPS)
MIN_TRIAL_STEPS = 10
VALIDATION_SHARE, MAX_VALIDATION = 10, 200  # a tenth of the training split, at most 200


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The chosen rate, each candidate's validation score, and what the search cost."""

    chosen: float
    scores: dict[float, float]
    seconds: float

    def figures(self) -> dict[str, Any]:
        """The JSON form: candidates as strings, NaN scores (diverged runs) as null."""
        return {
            "chosen": self.chosen,
            "validation_scores": {
                f"{rate:g}": None if math.isnan(score) else score
                for rate, score in self.scores.items()
            },
            "seconds": self.seconds,
        }


def candidate_rates(centre: float, count: int = 3) -> list[float]:
    """``count`` rates a factor ``SPREAD`` apart, centred on ``centre``."""
    half = (count - 1) / 2
    return [centre * SPREAD ** (index - half) for index in range(count)]


def trial_steps(steps: int) -> int:
    """Steps of one trial: a quarter of the row's budget, at least ``MIN_TRIAL_STEPS``."""
    return min(steps, max(MIN_TRIAL_STEPS, steps // TRIAL_SHARE))


def validation_task(task: LoadedTask, seed: int) -> LoadedTask:
    """The task trained on its training split less a validation part, and scored on that part."""
    order = list(range(len(task.train)))
    random.Random(seed).shuffle(order)
    size = max(1, min(MAX_VALIDATION, len(order) // VALIDATION_SHARE))
    held = set(order[:size])
    return dataclasses.replace(
        task,
        train=[example for index, example in enumerate(task.train) if index not in held],
        test=[task.train[index] for index in order[:size]],
    )


def search_learning_rate(
    candidates: Sequence[float], trial: Callable[[float], float], centre: float
) -> SearchResult:
    """Run ``trial(rate)`` (a validation score, higher is better) for each candidate.

    A trial that diverges scores NaN and loses; among equal scores the rate whose logarithm is
    nearest ``centre``'s wins.
    """
    started = time.perf_counter()
    scores = {rate: trial(rate) for rate in candidates}

    def rank(rate: float) -> tuple[float, float]:
        score = scores[rate]
        return (-math.inf if math.isnan(score) else score, -abs(math.log(rate / centre)))

    return SearchResult(max(candidates, key=rank), scores, time.perf_counter() - started)


def validation_score(metric: dict[str, float]) -> float:
    """Higher is better: minus the validation loss (a classifier's cross-entropy, a causal LM's
    per-token loss). A short trial's accuracy mostly ties at the majority class; its loss
    already orders the rates."""
    return -metric["loss"]


TrainerFor = Callable[[LoadedTask, float, str, Workload], Trainer]


def search_row(spec: RowSpec, task: LoadedTask, trainer_for: TrainerFor) -> SearchResult:
    """Search ``spec``'s rate around its declared one, each trial built by ``trainer_for``."""
    centre = spec.learning_rate
    assert centre is not None, "the plan gives every trained row a rate"
    trial = row_trial(task, spec.workload, trainer_for)
    return search_learning_rate(candidate_rates(centre), trial, centre)


def row_trial(
    task: LoadedTask, workload: Workload, trainer_for: TrainerFor
) -> Callable[[float], float]:
    """``trial(rate)``: train a fresh copy of ``task.model`` (as it is now, before anything
    patches it) with ``trainer_for(task, rate, scratch, workload)`` for ``trial_steps``, and
    score it on the validation part."""
    validation = validation_task(task, workload.seed)
    base = copy.deepcopy(task.model)
    short = dataclasses.replace(workload, steps=trial_steps(workload.steps))

    def trial(rate: float) -> float:
        candidate = dataclasses.replace(validation, model=copy.deepcopy(base))
        with tempfile.TemporaryDirectory() as scratch:
            trainer = trainer_for(candidate, rate, scratch, short)
            loss = trainer.train().training_loss
            model = trainer.model
        if not math.isfinite(loss):
            return math.nan  # diverged: its validation figure (NaN logits) means nothing
        return validation_score(candidate.evaluate(model))

    return trial
