"""Users' data sets: CSV or JSONL with ``text``/``label`` or ``prompt``/``completion`` columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from peftplug.data.datasets import LabelledText, PromptCompletion
from peftplug.errors import ConfigError

TEXT_COLUMNS = ("text", "label")
CHAT_COLUMNS = ("prompt", "completion")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``.csv`` or ``.jsonl`` file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file; give a .csv or .jsonl file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"--data {path}: line {number} is not JSON ({error}); "
                    "write one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(f"--data {path}: line {number} is not a JSON object")
            rows.append(row)
    else:
        raise ConfigError(f"--data {path}: unknown format {suffix!r}; use .csv or .jsonl")
    if not rows:
        raise ConfigError(f"--data {path} holds no rows")
    return rows


def _require(rows: list[dict[str, Any]], columns: tuple[str, ...], path: str | Path) -> None:
    for number, row in enumerate(rows, 1):
        missing = [c for c in columns if row.get(c) in (None, "")]
        if missing:
            raise ConfigError(
                f"--data {path}: row {number} lacks {', '.join(missing)} (columns found: "
                f"{', '.join(sorted(row))}); this task needs the columns {', '.join(columns)}"
            )


def read_labelled(path: str | Path) -> tuple[list[LabelledText], tuple[str, ...]]:
    """Labelled texts and the class names their labels index (sorted label values)."""
    rows = read_rows(path)
    _require(rows, TEXT_COLUMNS, path)
    names = tuple(sorted({str(row["label"]) for row in rows}, key=_label_order))
    if len(names) < 2:
        raise ConfigError(
            f"--data {path}: every row has label {names[0]!r}; a classifier needs two"
        )
    records = [LabelledText(str(row["text"]), names.index(str(row["label"]))) for row in rows]
    return records, names


def _label_order(name: str) -> tuple[int, int | str]:
    """Numeric labels in numeric order (so "10" follows "9"), then text labels."""
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


def read_prompt_completions(path: str | Path) -> list[PromptCompletion]:
    """Prompt/completion pairs."""
    rows = read_rows(path)
    _require(rows, CHAT_COLUMNS, path)
    return [PromptCompletion(str(row["prompt"]), str(row["completion"])) for row in rows]
