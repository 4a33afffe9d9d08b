"""`peftplug train`, `merge` and `export` on a tiny BERT saved to disk and a small JSONL file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertTokenizerFast

import peftplug
from peftplug.cli import main
from peftplug.testing.tiny_models import VOCAB_SIZE, tiny_bert_classifier

CUES = {"yes": ["good", "great", "fine"], "no": ["bad", "awful", "poor"]}
FILLER = [f"w{i}" for i in range(30)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT with a word-level tokenizer, and labelled texts with a cue word each."""
    root = tmp_path_factory.mktemp("tiny")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CUES["yes"], *CUES["no"], *FILLER]
    vocab += [f"unused{i}" for i in range(VOCAB_SIZE - len(vocab))]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(
        root / "model"
    )
    tiny_bert_classifier().save_pretrained(root / "model")
    generator = random.Random(1)
    lines = []
    for index in range(160):
        label = "yes" if index % 2 else "no"
        words = generator.sample(FILLER, 4) + [generator.choice(CUES[label])]
        generator.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": label}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root / "model", root / "data.jsonl"


def held_out_batch(model_dir: Path) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = ["w1 good w2 w3", "w4 awful w5 w6", "great w7", "poor w8 w9"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def trained(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, data = tiny
    out = tmp_path_factory.mktemp("runs") / "lora"
    config = tmp_path_factory.mktemp("config") / "train.yaml"
    config.write_text(f"method: lora\noptions:\n  r: 4\nsteps: 5\nmodel: {model}\ndata: {data}\n")
    arguments = [
        "train",
        "--config-file",
        str(config),
        "--steps",
        "60",
        "--batch-size",
        "8",
        "--lr",
        "3e-2",
        "--out",
        str(out),
    ]
    assert main(arguments) == 0
    return out


def test_train_saves_the_configured_adapter_and_flags_win(trained: Path) -> None:
    record = json.loads((trained / "adapter_config.json").read_text())
    (method,) = record["methods"]
    assert method["method"] == "lora" and method["config"]["r"] == 4  # from the YAML file
    assert (record["base_model"]["name_or_path"], record["base_model"]["source"]) == (
        "model",
        "directory",
    )
    assert "| accuracy |" in (trained / "README.md").read_text()  # the held-out metric
    tensors = record["tensors"]
    lora_a = [k for k in tensors if "lora_A" in k]
    assert lora_a and all(tensors[k]["shape"][0] == 4 for k in lora_a)


def test_merged_model_matches_the_adapter_and_learned_the_task(
    tiny: tuple[Path, Path], trained: Path, tmp_path: Path
) -> None:
    model_dir, _ = tiny
    # the adapter records the base by its directory's name only, so --model says where it is
    merge = ["merge", str(trained), "--out", str(tmp_path / "merged"), "--model", str(model_dir)]
    assert main(merge) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    adapted = peftplug.load_adapter(base, trained).eval()
    batch = held_out_batch(model_dir)
    with torch.no_grad():
        expected, actual = adapted(**batch).logits, merged(**batch).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert actual.argmax(-1).tolist() == [1, 0, 1, 0]  # label names sort: no=0, yes=1
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file()


def test_export_copies_the_verified_adapter_byte_for_byte(trained: Path, tmp_path: Path) -> None:
    assert main(["export", str(trained), "--out", str(tmp_path / "copy")]) == 0
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (tmp_path / "copy" / name).read_bytes() == (trained / name).read_bytes()


def test_export_in_peft_layout_loads_in_hf_peft_with_the_same_outputs(
    tiny: tuple[Path, Path], trained: Path, tmp_path: Path
) -> None:
    import peft

    model_dir, _ = tiny
    out = str(tmp_path / "peft")
    assert (
        main(["export", str(trained), "--out", out, "--format", "peft", "--model", str(model_dir)])
        == 0
    )
    fresh = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    theirs = peft.PeftModel.from_pretrained(fresh, tmp_path / "peft").eval()
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    ours = peftplug.load_adapter(base, trained).eval()
    batch = held_out_batch(model_dir)
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, ours(**batch).logits)
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["r"] == 4


def test_export_refuses_a_corrupted_adapter(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (broken / name).write_bytes((trained / name).read_bytes())
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    assert main(["export", str(broken), "--out", str(tmp_path / "copy")]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err
    assert not (tmp_path / "copy").exists()


def test_merging_into_a_non_empty_directory_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["merge", str(trained), "--out", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_train_needs_a_method_and_known_file_keys(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = tiny
    assert main(["train", "--model", str(model), "--data", str(data), "--out", str(tmp_path)]) == 2
    assert "--method lora" in capsys.readouterr().err
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"method": "lora", "rank": 4}))
    assert main(["train", "--config-file", str(config), "--out", str(tmp_path)]) == 2
    assert "unknown key(s) rank" in capsys.readouterr().err
