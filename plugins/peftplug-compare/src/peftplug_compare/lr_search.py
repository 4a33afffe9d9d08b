"""A fair learning rate per row: short trials around the method's own rate, on validation data.

Each candidate trains a fresh copy of the model for an eighth of the budget on the training
split less a validation part carved from it (never the held-out set), and is scored on that
part (``validation_score``). The best score wins if it beats the centre, the plugin's declared
rate, by more than the validation part's noise; otherwise the declared rate stays.
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

from peftplug.workload.intervals import Z_95
from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask
from peftplug_compare.spec import RowSpec

SPREAD = math.sqrt(10)  # candidates a half-decade apart: centre / 3.16, centre, centre * 3.16
TRIAL_SHARE = 8  # a trial runs steps // TRIAL_SHARE steps (at least MIN_TRIAL_STEPS)
MIN_TRIAL_STEPS = 10
# Trials shorter than this cannot tell rates apart: on the review snippets, 10- and 20-step trials
# tied for 9 of 10 methods, and a chance dip in a 10-step trial moved prompt tuning to a rate
# that ended at the majority class. Shorter budgets train at the declared rates.
SEARCHABLE_TRIAL_STEPS = 20
VALIDATION_SHARE, MAX_VALIDATION = 10, 200  # a tenth of the training split, at most 200


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The chosen rate, each candidate's validation score, and what the search cost."""

    chosen: float
    scores: dict[float, float]
    seconds: float
    margin: float = 0.0  # what another rate had to beat the declared rate's score by

    def figures(self) -> dict[str, Any]:
        """The JSON form: candidates as strings, NaN scores (diverged runs) as null."""
        return {
            "chosen": self.chosen,
            "validation_scores": {
                f"{rate:g}": None if math.isnan(score) else score
                for rate, score in self.scores.items()
            },
            "seconds": self.seconds,
            "margin": self.margin,
        }


def candidate_rates(centre: float, count: int = 3) -> list[float]:
    """``count`` rates a factor ``SPREAD`` apart, centred on ``centre``."""
    half = (count - 1) / 2
    return [centre * SPREAD ** (index - half) for index in range(count)]


def trial_steps(steps: int) -> int:
    """Steps of one trial: an eighth of the row's budget, at least ``MIN_TRIAL_STEPS``."""
    return min(steps, max(MIN_TRIAL_STEPS, steps // TRIAL_SHARE))


def search_off_reason(steps: int) -> str | None:
    """Why a budget of ``steps`` is too short to search, or ``None`` when it is long enough."""
    if steps // TRIAL_SHARE >= SEARCHABLE_TRIAL_STEPS:
        return None
    return (
        f"learning-rate search off at this budget: a trial would get {steps // TRIAL_SHARE} "
        f"steps (an eighth of {steps}), too few to tell rates apart, so each method trains at "
        f"its plugin's declared rate; with --steps {SEARCHABLE_TRIAL_STEPS * TRIAL_SHARE} or "
        "more each rate is searched"
    )


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


@dataclasses.dataclass(frozen=True)
class TrialScore:
    """A trial's validation score (higher is better; NaN: diverged) and its noise: one standard
    error of the difference between two such scores."""

    score: float
    noise: float = 0.0


def search_learning_rate(
    candidates: Sequence[float], trial: Callable[[float], TrialScore], centre: float
) -> SearchResult:
    """Run ``trial(rate)`` for each candidate; the best score wins if it beats the centre's.

    A trial that diverges scores NaN and loses. Another rate replaces ``centre`` only when its
    score is higher by more than the centre's noise: a difference inside it (one validation
    example in 200 decides many short trials) keeps the declared rate. Among equal scores the
    rate whose logarithm is nearest ``centre``'s wins.
    """
    started = time.perf_counter()
    trials = {rate: trial(rate) for rate in candidates}
    scores = {rate: result.score for rate, result in trials.items()}

    def rank(rate: float) -> tuple[float, float]:
        score = scores[rate]
        return (-math.inf if math.isnan(score) else score, -abs(math.log(rate / centre)))

    best = max(candidates, key=rank)
    margin = trials[centre].noise if centre in trials else 0.0
    if (
        centre in trials
        and not math.isnan(scores[centre])
        and scores[best] - scores[centre] <= margin
    ):
        best = centre
    return SearchResult(best, scores, time.perf_counter() - started, margin)


def validation_score(metric: dict[str, Any]) -> TrialScore:
    """Higher is better: the accuracy, or minus a causal LM's loss; with its noise.

    Not a classifier's loss: a short trial's loss favours the largest rate, which moves the
    model furthest in few steps, while over the whole budget that rate can be the worst (LoRA
    on the review snippets: 6.3e-3 had the best 20-step loss and ended at the majority class,
    where 2e-3 reached 0.70).
    """
    score = metric.get("accuracy", -metric.get("loss", math.nan))
    low, high = metric["interval"]
    # a 95% interval is 2 x 1.96 standard errors; a difference of two scores has sqrt(2) of one
    return TrialScore(score, math.sqrt(2) * (high - low) / (2 * Z_95))


TrainerFor = Callable[[LoadedTask, float, str, Workload], Trainer]


def search_row(spec: RowSpec, task: LoadedTask, trainer_for: TrainerFor) -> SearchResult:
    """Search ``spec``'s rate around its declared one, each trial built by ``trainer_for``."""
    centre = spec.learning_rate
    assert centre is not None, "the plan gives every trained row a rate"
    trial = row_trial(task, spec.workload, trainer_for)
    return search_learning_rate(candidate_rates(centre), trial, centre)


def row_trial(
    task: LoadedTask, workload: Workload, trainer_for: TrainerFor
) -> Callable[[float], TrialScore]:
    """``trial(rate)``: train a fresh copy of ``task.model`` (as it is now, before anything
    patches it) with ``trainer_for(task, rate, scratch, workload)`` for ``trial_steps``, and
    score it on the validation part."""
    validation = validation_task(task, workload.seed)
    base = copy.deepcopy(task.model)
    short = dataclasses.replace(workload, steps=trial_steps(workload.steps))

    def trial(rate: float) -> TrialScore:
        candidate = dataclasses.replace(validation, model=copy.deepcopy(base))
        with tempfile.TemporaryDirectory() as scratch:
            trainer = trainer_for(candidate, rate, scratch, short)
            loss = trainer.train().training_loss
            model = trainer.model
        if not math.isfinite(loss):
            return TrialScore(math.nan)  # diverged: its validation figure means nothing
        return validation_score(candidate.evaluate(model))

    return trial
