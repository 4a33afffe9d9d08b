"""Every command given bad input exits non-zero with one clear line, never a traceback.

Each case runs ``peftplug.cli.main`` on files made for it and fails before any training.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import peftplug
from peftplug.cli import main
from peftplug.testing.tiny_models import tiny_bert_classifier

GOOD_CSV = "text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(10))


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def config_only_model(root: Path) -> Path:
    tiny_bert_classifier().config.save_pretrained(root / "model")
    return root / "model"


def saved_model(root: Path) -> Path:
    tiny_bert_classifier().save_pretrained(root / "base")
    return root / "base"


def adapter(root: Path, method: str = "lora") -> Path:
    return peftplug.save_adapter(peftplug.apply(tiny_bert_classifier(), [method]), root / method)


def train(root: Path, *extra: str) -> list[str]:
    return ["train", "--method", "lora", "--out", str(root / "out"), *extra]


def train_on(data: str | bytes, name: str = "data.csv") -> Callable[[Path], list[str]]:
    return lambda root: train(root, "--data", str(write(root / name, data)))


Case = tuple[Callable[[Path], list[str]], str]
CASES: dict[str, Case] = {
    "windows-1252 csv": (
        train_on("text,label\ncaf\xe9 au lait,1\nthe tea,0\n".encode("cp1252")),
        "is not UTF-8 text (byte 0xe9 at offset 14)",
    ),
    "utf-16 without a byte-order mark": (
        train_on(GOOD_CSV.encode("utf-16-le")),
        "looks like UTF-16 without a byte-order mark",
    ),
    "unquoted comma": (
        train_on("text,label\ngood, not great,1\nbad,0\n"),
        "line 2 has 3 fields but the header has 2 (text, label); quote a text",
    ),
    "missing column": (train_on("sentence,label\nhi,1\n"), "needs the columns text, label"),
    "one label": (train_on("text,label\na,1\nb,1\n"), "a classifier needs two labels"),
    "every text has two labels": (
        train_on("text,label\na,1\na,0\nb,1\nb,0\nc,1\n"),
        "a classifier needs two labels",
    ),
    "empty file": (train_on("text,label\n"), "holds no rows"),
    "not json lines": (train_on('{"text": "a"\n', "data.jsonl"), "line 1 is not JSON"),
    "unknown suffix": (train_on("a\tb\n", "data.tsv"), "unknown format '.tsv'"),
    "no data file": (lambda root: train(root, "--data", str(root / "nope.csv")), "no such file"),
    "eval size too large": (
        lambda root: train(
            root, "--data", str(write(root / "d.csv", GOOD_CSV)), "--eval-size", "40"
        ),
        "--eval-size 40 leaves nothing to train on: the data has 10 usable example(s)",
    ),
    "eval size zero": (
        lambda root: train(root, "--eval-size", "0"),
        "--eval-size must be at least 1",
    ),
    "steps zero": (lambda root: train(root, "--steps", "0"), "--steps must be at least 1"),
    "model with only config.json": (
        lambda root: train(
            root,
            "--model",
            str(config_only_model(root)),
            "--data",
            str(write(root / "d.csv", GOOD_CSV)),
        ),
        "holds no weights",
    ),
    "model with a broken config.json": (
        lambda root: train(root, "--model", str(write(root / "m" / "config.json", "{").parent)),
        "its config.json cannot be read",
    ),
    "model directory without config.json": (
        lambda root: train(root, "--model", str(root)),
        "not a transformers model directory (no config.json)",
    ),
    "unknown method": (
        lambda root: ["train", "--method", "lorra", "--out", str(root / "o")],
        "unknown plugin 'lorra' (did you mean 'lora'",
    ),
    "bad option value": (lambda root: train(root, "--option", "r=-1"), "r"),
    "unknown option": (lambda root: train(root, "--option", "rank=8"), "rank"),
    "option without =": (lambda root: train(root, "--option", "r"), "write it as NAME=VALUE"),
    "config file missing": (
        lambda root: ["train", "--config-file", str(root / "c.yaml")],
        "--config-file",
    ),
    "config file not yaml": (
        lambda root: ["train", "--config-file", str(write(root / "c.yaml", "method: [lora"))],
        "cannot be parsed",
    ),
    "config file unknown key": (
        lambda root: ["train", "--config-file", str(write(root / "c.json", '{"lr": 1}'))],
        "unknown key(s) lr",
    ),
    "no method": (lambda root: ["train", "--out", str(root / "o")], "name the method"),
    "compare with bad data fails once, up front": (
        lambda root: [
            "compare",
            "--out",
            str(root / "c"),
            "--data",
            str(write(root / "d.csv", "x\n1\n")),
        ],
        "needs the columns text, label",
    ),
    "compare out is a file": (
        lambda root: ["compare", "--out", str(write(root / "f", "x"))],
        "is a file: name a directory",
    ),
    "compare empty methods": (lambda root: ["compare", "--methods", ","], "--methods is empty"),
    "compare config without method": (
        lambda root: ["compare", "--config", "r=8"],
        "name the method and the option",
    ),
    "compare lr not a number": (lambda root: ["compare", "--lr", "lora=fast"], "is not a number"),
    "compare latency repeats zero": (
        lambda root: ["compare", "--latency-repeats", "0"],
        "--latency-repeats must be at least 1",
    ),
    "export a directory without an adapter": (
        lambda root: ["export", str(root), "--out", str(root / "o")],
        "adapter_config.json",
    ),
    "export a missing directory": (
        lambda root: ["export", str(root / "nope"), "--out", str(root / "o")],
        "nope",
    ),
    "export to peft without an equivalent": (
        lambda root: [
            "export",
            str(adapter(root, "bitfit")),
            "--out",
            str(root / "o"),
            "--format",
            "peft",
            "--model",
            str(saved_model(root)),
        ],
        "'bitfit' has no HF PEFT equivalent",
    ),
    "merge onto a model with only config.json": (
        lambda root: [
            "merge",
            str(adapter(root)),
            "--out",
            str(root / "o"),
            "--model",
            str(config_only_model(root)),
        ],
        "holds no weights",
    ),
    "merge with no recorded local base": (
        lambda root: ["merge", str(adapter(root)), "--out", str(root / "o")],
        "is not a local model directory: pass --model DIR",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv_for, message = CASES[case]
    argv = argv_for(tmp_path)
    capsys.readouterr()  # what making the inputs printed
    files_before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    last_line = captured.err.strip().splitlines()[-1]  # after any progress bars
    assert last_line.startswith(f"peftplug {argv[0]}: error: ")
    assert message in last_line
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()  # nothing was trained or saved
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files_before


@pytest.mark.parametrize(
    "argv", [["trian"], ["train", "--steps", "many"], ["export"], ["compare", "--task", "vision"]]
)
def test_argument_errors_are_usage_messages(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "usage: peftplug" in err and "Traceback" not in err


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "text,label\ngood, not great,1\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftplug",
            "train",
            "--method",
            "lora",
            "--out",
            str(tmp_path / "o"),
            "--data",
            str(data),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"peftplug train: error: --data {data}: line 2 has 3 fields but the header has 2 (text, "
        'label); quote a text that holds commas, e.g. "good, but long",1'
    ]


def test_a_utf16_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from peftplug.workload.data_files import read_labelled

    data = write(tmp_path / "d.csv", GOOD_CSV.encode("utf-16"))
    records, names, _ = read_labelled(data)
    assert names == ("0", "1") and len(records) == 10 and records[3].text == "text number 3"
    assert json.dumps(names)
