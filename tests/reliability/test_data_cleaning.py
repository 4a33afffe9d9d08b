"""Cleaning a user's data says what it dropped and which classes it found, before training."""

from __future__ import annotations

from pathlib import Path

import pytest
from peftplug.commands import train as train_command
from transformers import BertTokenizerFast

from peftplug.cli import main
from peftplug.testing.tiny_models import VOCAB_SIZE, tiny_bert_classifier
from peftplug.workload.data_files import read_labelled, read_prompt_completions

ROWS = [
    ("fine film", "pos"),
    ("fine film", "pos"),  # an exact repeat
    ("dull film", "neg"),
    ("odd film", "pos"),
    ("odd film", "neg"),  # one text, two labels
    ("great film", "pos"),
    ("awful film", "neg"),
    ("poor film", "neg"),
]


def csv_of(rows: list[tuple[str, str]], path: Path) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    return path


def test_repeats_and_texts_with_two_labels_are_dropped_and_counted(tmp_path: Path) -> None:
    records, names, notes = read_labelled(csv_of(ROWS, tmp_path / "d.csv"))
    assert names == ("neg", "pos")
    assert sorted((r.text, names[r.label]) for r in records) == sorted(
        {(t, label) for t, label in ROWS if t != "odd film"}
    )
    assert notes == [
        f"{tmp_path / 'd.csv'}: 8 rows",
        "dropped 1 exact repeat(s) of a text and its label",
        "dropped 2 row(s) whose text has more than one label (1 text(s), e.g. 'odd film' "
        "labelled pos and neg)",
        "2 classes from the label column: neg (3), pos (2)",
    ]


def test_clean_data_gets_no_drop_notes(tmp_path: Path) -> None:
    rows = [(t, label) for t, label in ROWS if t not in ("fine film", "odd film")]
    _, _, notes = read_labelled(csv_of(rows, tmp_path / "d.csv"))
    assert not any("dropped" in note for note in notes)


def test_prompt_completion_repeats_are_counted(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    line = '{"prompt": "hi", "completion": "hello"}\n'
    data.write_text(line * 3 + '{"prompt": "hi", "completion": "hey"}\n')
    pairs, notes = read_prompt_completions(data)
    assert [p.completion for p in pairs] == ["hello", "hey"]
    assert notes[1] == "dropped 2 exact repeat(s) of a prompt and answer"


def test_train_prints_the_data_notes_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"unused{i}" for i in range(VOCAB_SIZE - len(vocab))]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(model)
    tiny_bert_classifier().save_pretrained(model)
    capsys.readouterr()

    def stop_at_training(trainer: object) -> None:
        printed = capsys.readouterr().out
        assert "data: 2 classes from the label column: neg (3), pos (2)" in printed
        assert "data: 4 examples for training, 1 held out" in printed
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "train_measured", stop_at_training)
    data = csv_of(ROWS, tmp_path / "d.csv")
    argv = [
        "train",
        "--method",
        "lora",
        "--model",
        str(model),
        "--data",
        str(data),
        "--batch-size",
        "2",
    ]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 130
    assert not (tmp_path / "out").exists()
