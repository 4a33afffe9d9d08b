"""The learning-rate search: its candidates, its validation split, and a choice it must make."""

from __future__ import annotations

import math

import pytest
from peftplug_compare.lr_search import (
    TrialScore,
    candidate_rates,
    row_trial,
    search_learning_rate,
    search_off_reason,
    trial_steps,
    validation_score,
    validation_task,
)
from transformers import Trainer

from peftplug.testing.tiny_task import save_tiny_classifier, write_reviews
from peftplug.workload.intervals import wilson_interval
from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask, load_task
from peftplug.workload.training import build_trainer, training_arguments


def test_candidates_are_a_half_decade_apart_around_the_declared_rate() -> None:
    low, centre, high = candidate_rates(1e-3)
    assert centre == 1e-3
    assert low == pytest.approx(1e-3 / math.sqrt(10)) and high == pytest.approx(1e-3 * 10**0.5)
    assert trial_steps(160) == 20 and trial_steps(80) == 10 and trial_steps(6) == 6


def test_budgets_too_short_to_search_say_so_and_how_to_search() -> None:
    assert search_off_reason(160) is None and search_off_reason(300) is None
    reason = search_off_reason(80)
    assert reason and "would get 10 steps" in reason and "--steps 160" in reason


def test_ties_keep_the_declared_rate_and_a_diverged_trial_loses() -> None:
    scores = {1e-4: 0.9, 1e-3: 0.9, 1e-2: math.nan}
    result = search_learning_rate(list(scores), lambda rate: TrialScore(scores[rate]), 1e-3)
    assert result.chosen == 1e-3
    assert result.figures()["validation_scores"] == {"0.0001": 0.9, "0.001": 0.9, "0.01": None}
    diverged_centre = {1e-4: 0.6, 1e-3: math.nan, 1e-2: 0.5}
    trial = lambda rate: TrialScore(diverged_centre[rate], noise=0.2)  # noqa: E731
    assert search_learning_rate(list(diverged_centre), trial, 1e-3).chosen == 1e-4


def test_a_gain_inside_the_noise_keeps_the_declared_rate() -> None:
    """200 validation examples at 0.62: a 95% Wilson interval of [0.551, 0.684], so one
    standard error of a difference is sqrt(2) * 0.133 / (2 * 1.96) = 0.048."""
    metric = {"accuracy": 0.62, "interval": list(wilson_interval(124, 200))}
    noise = validation_score(metric).noise
    assert noise == pytest.approx(0.048, abs=5e-4)
    for gain, chosen in ((0.005, 1e-3), (0.045, 1e-3), (0.06, 1e-2)):
        scores = {1e-4: 0.60, 1e-3: 0.62, 1e-2: 0.62 + gain}
        result = search_learning_rate(
            list(scores), lambda rate, s=scores: TrialScore(s[rate], noise), 1e-3
        )
        assert result.chosen == chosen, gain


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedTask, Workload]:
    root = tmp_path_factory.mktemp("tiny")
    model = save_tiny_classifier(root / "model")
    data = write_reviews(root / "data.csv", rows=400)
    workload = Workload(model=str(model), data=str(data), steps=480, batch_size=8, max_length=16)
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
    # 60 steps at 3e-3 learn the cue word (0.84 of 32 validation texts on the machine it was
    # written on); at 1e3 every AdamW step throws the weights far off: chance (0.5) or NaN
    assert result.scores[3e-3] > 0.7
    assert math.isnan(result.scores[1e3]) or result.scores[1e3] <= 0.6
