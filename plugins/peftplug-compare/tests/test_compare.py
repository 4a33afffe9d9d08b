"""`peftplug compare` on a tiny BERT saved to disk and a small CSV (via --model and --data).

The figures are checked against values computed here independently: parameter counts from the
model's own modules, adapter sizes from the files and their tensors, token counts from the data.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import peftplug_compare
import pytest
import safetensors.torch
import torch
from peftplug_compare.arguments import parse_learning_rates, parse_overrides
from peftplug_compare.plan import plan_rows
from transformers import BertTokenizerFast

from peftplug.cli import main
from peftplug.contracts import ComparisonDefaults, MethodSpec
from peftplug.errors import ConfigError
from peftplug.testing.portable import leaks
from peftplug.testing.tiny_models import VOCAB_SIZE, tiny_bert_classifier, tiny_llama
from peftplug.testing.tiny_task import (
    WORDS_PER_TEXT,
    save_tiny_classifier,
    write_reviews,
)
from peftplug.workload.data_files import read_labelled
from peftplug.workload.options import Workload

STEPS, BATCH = 120, 8


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return save_tiny_classifier(root / "model"), write_reviews(root / "reviews.csv")


def compare_arguments(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--batch-size",
        str(BATCH),
        "--latency-repeats",
        "3",
        *extra,
    ]


@pytest.fixture(scope="module")
def report(
    tiny_setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    model, data = tiny_setup
    out = tmp_path_factory.mktemp("compare")
    arguments = compare_arguments(
        model,
        data,
        out,
        "--methods",
        "lora,bitfit,prompt",
        "--lr",
        "full=3e-3",
        "--lr",
        "lora=3e-2",
        "--lr",
        "head=3e-2",
        "--config",
        "prompt.num_virtual_tokens=0",  # invalid: this row must fail alone
        "--vs-peft",
    )
    assert main(arguments) == 0
    record = json.loads((out / "compare.json").read_text())
    record["out"] = out
    return record


def rows_by_label(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in report["rows"]}


@pytest.mark.slow
def test_rows_come_in_order_with_baselines_and_peft(report: dict[str, Any]) -> None:
    assert report["status"] == "complete"
    assert [row["label"] for row in report["rows"]] == [
        "untrained",
        "full",
        "head",
        "bitfit",
        "lora",
        "lora (HF PEFT)",
        "prompt",
        "prompt (HF PEFT)",
    ]


@pytest.mark.slow
def test_a_bad_config_fails_its_row_only(report: dict[str, Any]) -> None:
    rows = rows_by_label(report)
    assert rows["prompt"]["status"] == "failed"
    assert (
        "num_virtual_tokens" in rows["prompt"]["error"] and "ConfigError" in rows["prompt"]["error"]
    )
    assert rows["prompt (HF PEFT)"]["error"] == rows["prompt"]["error"]  # same options, same check
    assert all(
        row["status"] == "ok" for label, row in rows.items() if not label.startswith("prompt")
    )


@pytest.mark.slow
def test_trainable_counts_match_the_model_counted_here(report: dict[str, Any]) -> None:
    model = tiny_bert_classifier()
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    hidden, layers, rank = model.config.hidden_size, model.config.num_hidden_layers, 8
    lora = layers * 2 * (rank * hidden + hidden * rank) + head  # query and value, r=8
    rows = rows_by_label(report)
    expected = {
        "untrained": 0,
        "head": head,
        "full": total,
        "lora": lora,
        "lora (HF PEFT)": lora,
        "bitfit": biases - model.classifier.bias.numel() + head,
    }
    for label, count in expected.items():
        figures = rows[label]["parameters"]
        assert figures["trainable"] == count, label
        assert figures["base"] == total
        assert figures["trainable_percent"] == pytest.approx(100 * count / total)
    # A and B, and the adapter's own copy of the task head (the core's task head facility)
    assert rows["lora"]["parameters"]["added"] == lora
    assert rows["bitfit"]["parameters"]["added"] == head


@pytest.mark.slow
def test_adapter_bytes_are_the_saved_files_holding_the_trainable_tensors(
    report: dict[str, Any],
) -> None:
    for row in report["rows"]:
        if row["kind"] != "method" or row["status"] != "ok":
            continue
        directory = report["out"] / row["storage"]["adapter_dir"]  # recorded relative to --out
        files = sorted(p.name for p in directory.glob("adapter_*"))
        assert files == ["adapter_config.json", "adapter_model.safetensors"]
        assert row["storage"]["adapter_bytes"] == sum((directory / f).stat().st_size for f in files)
        tensors = safetensors.torch.load_file(directory / "adapter_model.safetensors")
        assert sum(t.numel() for t in tensors.values()) == row["parameters"]["trainable"]


@pytest.mark.slow
def test_training_figures_are_measured(report: dict[str, Any]) -> None:
    for row in report["rows"]:
        if row["kind"] == "untrained" or row["status"] != "ok":
            continue
        training = row["training"]
        assert training["steps"] == STEPS and training["examples"] == STEPS * BATCH
        assert training["tokens"] == STEPS * BATCH * (WORDS_PER_TEXT + 2)
        assert training["seconds"] > 0
        assert training["tokens_per_second"] == pytest.approx(
            training["tokens"] / training["seconds"]
        )
        assert training["peak_reset"] and training["peak_rss_mb"] >= training["rss_before_mb"] > 0


@pytest.mark.slow
def test_training_moves_the_held_out_accuracy(report: dict[str, Any]) -> None:
    rows = rows_by_label(report)
    untrained = rows["untrained"]["metric"]["accuracy"]
    assert rows["untrained"]["eval_examples"] == 40 and rows["untrained"]["train_examples"] == 160
    assert 0.3 <= untrained <= 0.7  # a fresh head is near chance
    assert rows["full"]["metric"]["accuracy"] >= 0.9
    assert rows["lora"]["metric"]["accuracy"] >= 0.8


@pytest.mark.slow
def test_latency_is_measured_merged_only_where_the_method_merges(report: dict[str, Any]) -> None:
    rows = rows_by_label(report)
    for row in report["rows"]:
        if row["status"] == "ok":
            assert row["inference"]["base_ms"] > 0 and row["inference"]["batch_shape"] == [BATCH, 8]
    assert (
        rows["lora"]["inference"]["merged_ms"] > 0
        and rows["lora"]["inference"]["merge_note"] is None
    )
    assert rows["lora (HF PEFT)"]["inference"]["merged_ms"] > 0
    assert rows["full"]["inference"]["merged_ms"] is None
    assert "in place" in rows["full"]["inference"]["merge_note"]
    assert rows["bitfit"]["inference"]["merged_ms"] > 0  # its head copy merges into the original
    assert "unmerged_ms" not in rows["untrained"]["inference"]


@pytest.mark.slow
def test_the_record_names_command_versions_seed_and_machine(report: dict[str, Any]) -> None:
    environment = report["environment"]
    assert environment["command"].startswith("peftplug compare --model ")
    assert environment["packages"]["torch"] == torch.__version__
    assert environment["machine"]["cores_available"] == len(os.sched_getaffinity(0))
    assert report["workload"]["seed"] == 0 and report["workload"]["steps"] == STEPS
    assert rows_by_label(report)["lora"]["options"]["r"] == 8  # lora's declared defaults
    assert rows_by_label(report)["lora"]["learning_rate"] == 3e-2  # --lr wins


@pytest.mark.slow
def test_the_report_files_hold_no_machine_path(report: dict[str, Any]) -> None:
    out: Path = report["out"]
    assert leaks([out / "compare.json", out / "compare.md"], out) == []
    assert report["environment"]["command"].startswith("peftplug compare --model model --data ")
    assert rows_by_label(report)["lora"]["storage"]["adapter_dir"] == "adapters/lora"


@pytest.mark.slow
def test_markdown_and_chart_are_written(report: dict[str, Any]) -> None:
    out: Path = report["out"]
    markdown = (out / "compare.md").read_text()
    for row in report["rows"]:
        assert f"| {row['label']} |" in markdown
    assert "num_virtual_tokens" in markdown.split("## Failed rows")[1]
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and report["chart"] == "compare.png"


@pytest.mark.slow
def test_an_interrupted_run_keeps_the_finished_rows(
    tiny_setup: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny_setup
    arguments = compare_arguments(model, data, tmp_path, "--methods", "full", "--no-baselines")
    arguments[arguments.index("--steps") + 1] = "100000"  # the 'full' row never ends by itself
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "peftplug.cli", *arguments],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    report_file = tmp_path / "compare.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if report_file.is_file() and json.loads(report_file.read_text())["rows"]:
            break
        time.sleep(0.5)
    time.sleep(3)  # the 'full' row is training now
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    record = json.loads(report_file.read_text())
    assert record["status"] == "interrupted"
    assert [row["label"] for row in record["rows"]] == ["untrained"]
    assert record["planned"] == ["untrained", "full"]
    assert "| untrained |" in (tmp_path / "compare.md").read_text()


@pytest.mark.slow
def test_causal_lm_task_reports_held_out_loss_that_training_lowers(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(20)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"unused{i}" for i in range(VOCAB_SIZE - len(vocab))]
    model_dir = tmp_path / "llama"
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(model_dir)
    tiny_llama().save_pretrained(model_dir)  # no chat template: prompt + " " + completion
    data = tmp_path / "pairs.jsonl"
    # the answer is given by the prompt's first word: learnable, and the held-out pairs are new
    lines = [
        json.dumps({"prompt": f"w{a} w{b}", "completion": f"w{10 + a}"})
        for a in range(10)
        for b in range(10)
    ]
    data.write_text("\n".join(lines) + "\n")
    arguments = [
        "compare",
        "--task",
        "causal-lm",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--methods",
        "full",
        "--no-baselines",
        "--steps",
        "40",
        "--batch-size",
        "8",
        "--lr",
        "full=3e-3",
        "--latency-repeats",
        "2",
        "--shots",
        "3",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(arguments) == 0
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    rows = rows_by_label(record)
    assert list(rows) == ["untrained", "3-shot in context", "full"]
    assert record["workload"]["task"] == "causal-lm"
    # the in-context row scores the same held-out answers after 3 training pairs of 3 tokens
    shots, zero = rows["3-shot in context"], rows["untrained"]
    assert shots["eval_examples"] == zero["eval_examples"] and shots["train_examples"] == 3
    assert zero["inference"]["batch_shape"][1] == 3
    assert shots["inference"]["batch_shape"][1] == 3 * 3 + 3
    low, high = shots["metric"]["interval"]
    assert low <= shots["metric"]["loss"] <= high
    before, after = rows["untrained"]["metric"], rows["full"]["metric"]
    assert after["perplexity"] == pytest.approx(math.exp(after["loss"]))
    assert after["loss"] < before["loss"] - 0.5
    # prompt (2 words) + completion (1 word): 3 tokens per example, no special tokens
    assert rows["full"]["training"]["tokens"] == 40 * 8 * 3


def test_config_overrides_parse_values_and_name_the_form() -> None:
    parsed = parse_overrides(
        ["lora.r=16", "lora.target_modules=[query, value]", "bitfit.train_head=false"]
    )
    assert parsed == {
        "lora": {"r": 16, "target_modules": ["query", "value"]},
        "bitfit": {"train_head": False},
    }
    with pytest.raises(ConfigError, match="lora.r=16"):
        parse_overrides(["r=16"])
    assert parse_learning_rates(["lora=5e-4"]) == {"lora": 5e-4}
    with pytest.raises(ConfigError, match="not a number"):
        parse_learning_rates(["lora=fast"])


def test_plan_puts_baselines_first_and_applies_declared_defaults(tmp_path: Path) -> None:
    searched = Workload(steps=160)  # trials of 20 steps: long enough to search
    rows = plan_rows(searched, tmp_path, methods=["lora"], overrides={"lora": {"r": 4}})
    assert [r.label for r in rows] == ["untrained", "full", "head", "lora"]  # declared baselines
    lora = rows[-1]
    assert lora.options == {"r": 4, "alpha": 16} and lora.learning_rate == 2e-3
    assert lora.adapter_dir == str(tmp_path / "adapters" / "lora")
    assert lora.search_learning_rate
    fixed = plan_rows(searched, tmp_path, methods=["lora"], learning_rates={"lora": 1e-3})
    assert not fixed[-1].search_learning_rate and fixed[-1].learning_rate == 1e-3
    short = plan_rows(Workload(steps=80), tmp_path, methods=["lora"])
    assert not short[-1].search_learning_rate and short[-1].learning_rate == 2e-3
    peft_rows = plan_rows(Workload(), tmp_path, methods=["lora", "bitfit"], vs_peft=True)
    assert [r.label for r in peft_rows if r.kind == "peft"] == ["lora (HF PEFT)"]  # peft_type
    with pytest.raises(ConfigError, match="bitfit"):
        plan_rows(Workload(), tmp_path, methods=["lora"], overrides={"bitfit": {}})
    with pytest.raises(Exception, match="unknown plugin 'lorra'"):
        plan_rows(Workload(), tmp_path, methods=["lorra"])


def test_comparison_defaults_are_checked_when_a_plugin_declares_them() -> None:
    from peftplug.config import MethodConfig

    spec = MethodSpec("x", MethodConfig, comparison={"learning_rate": 2e-4, "options": {"k": 1}})
    assert spec.comparison_defaults == ComparisonDefaults(2e-4, {"k": 1})
    assert MethodSpec("x", MethodConfig).comparison_defaults == ComparisonDefaults()
    with pytest.raises(ConfigError, match="unknown comparison key"):
        MethodSpec("x", MethodConfig, comparison={"lr": 1e-3})


def test_user_data_needs_its_columns(tmp_path: Path) -> None:
    good = tmp_path / "data.jsonl"
    good.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    records, names, _ = read_labelled(good)
    assert names == ("0", "1") and [r.label for r in records] == [1, 0]
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,1\n")
    with pytest.raises(ConfigError, match="needs the columns text, label"):
        read_labelled(bad)


def test_compare_names_no_method() -> None:
    """Methods come from their plugins' declarations and hooks, never from compare's source."""
    source = Path(peftplug_compare.__file__).parent
    names = ("lora", "prefix", "prompt", "ptuning", "head", "full")
    found = [
        f"{path.name}: {name}"
        for path in sorted(source.glob("*.py"))
        for name in names
        if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text()
    ]
    assert not found
