"""Users' data sets: CSV or JSONL with ``text``/``label`` or ``prompt``/``completion`` columns.

Reading cleans the rows and says what the cleaning did (``notes``): exact repeats are dropped,
so that no example is both trained on and held out, and so are texts given more than one label.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from peftplug.data.datasets import LabelledText, PromptCompletion, unique
from peftplug.errors import ConfigError

TEXT_COLUMNS = ("text", "label")
CHAT_COLUMNS = tuple(field.name for field in dataclasses.fields(PromptCompletion))
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``.csv`` or ``.jsonl`` file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file; give a .csv or .jsonl file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(_text_of(path), path)
    elif suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(_text_of(path), path)
    else:
        raise ConfigError(f"--data {path}: unknown format {suffix!r}; use .csv or .jsonl")
    if not rows:
        raise ConfigError(f"--data {path} holds no rows")
    return rows


def _text_of(path: Path) -> str:
    """The file decoded: UTF-8, or UTF-8/UTF-16 with a byte-order mark (as Excel saves them)."""
    data = path.read_bytes()
    for mark, codec in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return data.decode(codec)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"--data {path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f'{error.start}): save it as UTF-8 (Excel: "CSV UTF-8"), or convert it, e.g. '
            f"iconv -f WINDOWS-1252 -t UTF-8 {path} > {path.stem}-utf8{path.suffix}"
        ) from None
    if "\x00" in text:
        raise ConfigError(
            f"--data {path} holds NUL bytes: it looks like UTF-16 without a byte-order mark; "
            "save it as UTF-8"
        )
    return text


def _csv_rows(text: str, path: Path) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    rows = []
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue  # a blank line
        if len(fields) != len(header):
            raise ConfigError(
                f"--data {path}: line {reader.line_num} has {len(fields)} fields but the header "
                f"has {len(header)} ({', '.join(header)}); quote a text that holds commas, "
                'e.g. "good, but long",1'
            )
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def _jsonl_rows(text: str, path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
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
    return rows


def _require(rows: list[dict[str, Any]], columns: tuple[str, ...], path: str | Path) -> None:
    for number, row in enumerate(rows, 1):
        missing = [c for c in columns if row.get(c) in (None, "")]
        if missing:
            raise ConfigError(
                f"--data {path}: row {number} lacks {', '.join(missing)} (columns found: "
                f"{', '.join(sorted(row))}); this task needs the columns {', '.join(columns)}"
            )


def read_labelled(
    path: str | Path,
) -> tuple[list[LabelledText], tuple[str, ...], list[str]]:
    """Cleaned labelled texts, the class names their labels index, and what cleaning did."""
    rows = read_rows(path)
    _require(rows, TEXT_COLUMNS, path)
    pairs = [(str(row["text"]), str(row["label"])) for row in rows]
    kept = unique(pairs)
    notes = [f"{path}: {len(rows)} rows"]
    if len(kept) < len(pairs):
        notes.append(f"dropped {len(pairs) - len(kept)} exact repeat(s) of a text and its label")
    labels_of: dict[str, list[str]] = {}
    for text, label in kept:
        labels_of.setdefault(text, []).append(label)
    torn = {text: labels for text, labels in labels_of.items() if len(labels) > 1}
    if torn:
        kept = [(text, label) for text, label in kept if text not in torn]
        text, labels = next(iter(torn.items()))
        notes.append(
            f"dropped {sum(map(len, torn.values()))} row(s) whose text has more than one label "
            f"({len(torn)} text(s), e.g. {text[:40]!r} labelled {' and '.join(labels)})"
        )
    counts = Counter(label for _, label in kept)
    names = tuple(sorted(counts, key=_label_order))
    if len(names) < 2:
        raise ConfigError(
            f"--data {path}: after cleaning every row has label {names[0] if names else None!r}; "
            "a classifier needs two labels"
        )
    notes.append(
        f"{len(names)} classes from the label column: "
        + ", ".join(f"{name} ({counts[name]})" for name in names)
    )
    records = [LabelledText(text, names.index(label)) for text, label in kept]
    return records, names, notes


def _label_order(name: str) -> tuple[int, int | str]:
    """Numeric labels in numeric order (so "10" follows "9"), then text labels."""
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


def read_prompt_completions(path: str | Path) -> tuple[list[PromptCompletion], list[str]]:
    """Prompt/completion pairs without exact repeats, and what cleaning did."""
    rows = read_rows(path)
    _require(rows, CHAT_COLUMNS, path)
    pairs = [PromptCompletion(*(str(row[column]) for column in CHAT_COLUMNS)) for row in rows]
    kept = unique(pairs)
    notes = [f"{path}: {len(rows)} rows"]
    if len(kept) < len(pairs):
        notes.append(f"dropped {len(pairs) - len(kept)} exact repeat(s) of a prompt and answer")
    return kept, notes
