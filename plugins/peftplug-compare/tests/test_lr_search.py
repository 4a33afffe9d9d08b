"""The learning-rate search: its candidates, its validation split, and a choice it must make."""

from __future__ import annotations

import math

import pytest
from peftplug_compare.lr_search import (
    candidate_rates,
    row_trial,
    search_learning_rate,
    trial_steps,
    validation_task,
)
from transformers import Trainer

from peftplug.testing.tiny_task import save_tiny_classifier, write_reviews
from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask, load_task
from peftplug.workload.training import build_trainer, training_arguments


def test_candidates_are_a_half_decade_apart_around_the_declared_rate() -> None:
    low, centre, high = candidate_rates(1e-3)
    assert centre == 1e-3
    assert low == pytest.approx(1e-3 / math.sqrt(10)) and high == pytest.approx(1e-3 * 10**0.5)
    assert trial_steps(80) == 20 and trial_steps(20) == 10 and trial_steps(6) == 6


def test_ties_keep_the_declared_rate_and_a_diverged_trial_loses() -> None:
    scores = {1e-4: -0.5, 1e-3: -0.5, 1e-2: math.nan}
    result = search_learning_rate(list(scores), scores.__getitem__, 1e-3)
    assert result.chosen == 1e-3
    assert result.figures()["validation_scores"] == {"0.0001": -0.5, "0.001": -0.5, "0.01": None}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedTask, Workload]:
    root = tmp_path_factory.mktemp("tiny")
    model = save_tiny_classifier(root / "model")
    data = write_reviews(root / "data.csv", rows=400)
    workload = Workload(model=str(model), data=str(data), steps=240, batch_size=8, max_length=16)
    return load_task(workload), workload


def test_the_validation_part_comes_from_the_training_split_only(
    task: tuple[LoadedTask, Workload],
) -> None:
    loaded, _ = task
    validation = validation_task(loaded, seed=0)
    ids = [tuple(example["input_ids"]) for example in loaded.train]
    assert len(validation.test) == len(loaded.train) // 10
    assert sorted(map(tuple, (e["input_ids"] for e in validation.train + validation.test))) == (
        sorted(ids)
    )
    held_out = {tuple(example["input_ids"]) for example in loaded.test}
    assert not held_out & {tuple(example["input_ids"]) for example in validation.test}


def test_the_search_picks_the_rate_that_learns_over_one_that_diverges(
    task: tuple[LoadedTask, Workload],
) -> None:
    loaded, workload = task

    def trainer_for(run: LoadedTask, rate: float, scratch: str, short: Workload) -> Trainer:
        args = training_arguments(short, scratch, rate, plugins=["full"])
        return build_trainer(run, args, f"full @ {rate:g}", peftplug_methods=True)

    trial = row_trial(loaded, workload, trainer_for)
    result = search_learning_rate([1e3, 3e-3], trial, centre=1e-2)
    assert result.chosen == 3e-3, result.scores
    # The score is minus the validation cross-entropy. Guessing evenly between the two classes
    # scores -ln 2: 60 steps at 3e-3 start learning the cue word and do better; at 1e3 every
    # AdamW step throws the weights far off, confidently wrong (worse than guessing) or NaN.
    assert result.scores[3e-3] > -math.log(2)
    assert math.isnan(result.scores[1e3]) or result.scores[1e3] < -math.log(2)
