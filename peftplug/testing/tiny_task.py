"""A tiny BERT classifier saved with a word-level tokenizer, and CSV data it can learn.

Each text is filler words plus one cue word that gives its label, so a few dozen steps of any
working method separate the classes: what compare's and the learning-rate search's tests need.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from transformers import BertTokenizerFast

from peftplug.testing.tiny_models import VOCAB_SIZE, tiny_bert_classifier

POSITIVE = ["good", "great", "fine", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
FILLER = [f"w{i}" for i in range(40)]
WORDS_PER_TEXT = 6  # every text is 6 in-vocabulary words: 8 tokens with [CLS] and [SEP]


def save_tiny_classifier(directory: Path) -> Path:
    """A tiny BERT classifier and a word-level tokenizer over VOCAB_SIZE tokens."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]
    vocab += [f"unused{i}" for i in range(VOCAB_SIZE - len(vocab))]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(directory)
    tiny_bert_classifier().save_pretrained(directory)
    return directory


def write_reviews(path: Path, rows: int = 200) -> Path:
    """Texts whose label is given by one cue word among filler words."""
    generator = random.Random(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in range(rows):
            positive = index % 2 == 1
            words = generator.sample(FILLER, WORDS_PER_TEXT - 1)
            words.insert(
                generator.randrange(WORDS_PER_TEXT),
                generator.choice(POSITIVE if positive else NEGATIVE),
            )
            writer.writerow([" ".join(words), "pos" if positive else "neg"])
    return path
