"""Adapter files: strict, self-describing, atomic; a failed load leaves the model as it was."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch

import peftplug
from peftplug.serialization import ADAPTER_CONFIG, ADAPTER_WEIGHTS, config_digest
from peftplug.state import peft_state
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier


def _trained_adapter(directory: Path) -> torch.nn.Module:
    model = peftplug.apply(tiny_bert_classifier(), "lora", {"lora": {"r": 4}})
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter.data)
    peftplug.save_adapter(model, directory)
    return model


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert peft_state(model) is None
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())


def _rewrite(directory: Path, tensors: dict[str, torch.Tensor], edit_config=None) -> None:
    """Rewrite an adapter consistently (manifest and both checksums), as a tool might."""
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    data = safetensors.torch.save(tensors)
    live_name = {k: entry["name"] for k, entry in config["tensors"].items()}
    config["tensors"] = {
        k: {
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            "method": 0,
            "name": live_name.get(k, k),
        }
        for k, t in tensors.items()
    }
    config["weights_sha256"] = hashlib.sha256(data).hexdigest()
    if edit_config:
        edit_config(config)
    config["config_sha256"] = config_digest(config)
    (directory / ADAPTER_WEIGHTS).write_bytes(data)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config))


def test_config_records_methods_versions_base_model_and_manifest(tmp_path: Path) -> None:
    _trained_adapter(tmp_path)
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    (method,) = config["methods"]
    assert method["method"] == "lora" and method["distribution"] == "peftplug-lora"
    assert method["version"] == "0.1.0" and method["config"]["r"] == 4
    assert config["base_model"]["model_type"] == "bert"
    weights = safetensors.torch.load_file(tmp_path / ADAPTER_WEIGHTS)
    assert set(config["tensors"]) == set(weights)
    assert all(".lora_" in k or k.startswith("base_model.model.classifier.") for k in weights)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    trained = _trained_adapter(tmp_path)
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path)
    batch = classification_batch()
    batch.pop("labels")
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, trained(**batch).logits)


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "bad-json", "no-weights"])
def test_damaged_files_are_refused_and_the_model_is_untouched(tmp_path: Path, damage: str) -> None:
    _trained_adapter(tmp_path)
    weights = tmp_path / ADAPTER_WEIGHTS
    data = weights.read_bytes()
    if damage == "flip-byte":
        weights.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "bad-json":
        (tmp_path / ADAPTER_CONFIG).write_text('{"format": "peftplug-adapter", ')
    else:
        weights.unlink()
    model = tiny_bert_classifier()
    before = _snapshot(model)
    with pytest.raises(peftplug.AdapterLoadError, match="corrupted|cannot read"):
        peftplug.load_adapter(model, tmp_path)
    _assert_untouched(model, before)


def test_unexpected_and_missing_tensors_are_named(tmp_path: Path) -> None:
    _trained_adapter(tmp_path)
    tensors = safetensors.torch.load_file(tmp_path / ADAPTER_WEIGHTS)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    dropped = json.loads((tmp_path / ADAPTER_CONFIG).read_text())["tensors"][dropped]["name"]
    tensors["bert.extra.weight"] = torch.zeros(2)
    _rewrite(tmp_path, tensors)
    model = tiny_bert_classifier()
    before = _snapshot(model)
    with pytest.raises(peftplug.AdapterLoadError) as caught:
        peftplug.load_adapter(model, tmp_path)
    assert f"missing tensors: {dropped}" in str(caught.value)
    assert "unexpected tensors: bert.extra.weight" in str(caught.value)
    _assert_untouched(model, before)


def test_a_method_that_is_not_installed_names_its_distribution(tmp_path: Path) -> None:
    _trained_adapter(tmp_path)
    tensors = safetensors.torch.load_file(tmp_path / ADAPTER_WEIGHTS)

    def rename(config: dict) -> None:
        config["methods"][0].update(method="dora", distribution="peftplug-dora", version="2.0")

    _rewrite(tmp_path, tensors, rename)
    with pytest.raises(peftplug.AdapterLoadError, match="pip install peftplug-dora"):
        peftplug.load_adapter(tiny_bert_classifier(), tmp_path)


def test_adapter_for_another_model_names_both_models(tmp_path: Path) -> None:
    _trained_adapter(tmp_path)
    other = tiny_bert_classifier(hidden_size=48)
    before = _snapshot(other)
    with pytest.raises(
        peftplug.AdapterLoadError, match=r"shape \[4, 32\] in the adapter but \[4, 48\]"
    ):
        peftplug.load_adapter(other, tmp_path)
    _assert_untouched(other, before)


def test_directory_without_an_adapter_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(peftplug.AdapterLoadError, match="adapter_config.json"):
        peftplug.load_adapter(tiny_bert_classifier(), tmp_path)


def test_an_interrupted_save_keeps_the_previous_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _trained_adapter(tmp_path)
    real_fsync = os.fsync
    calls = {"count": 0}

    def failing_fsync(descriptor: int) -> None:
        calls["count"] += 1
        if calls["count"] == 2:  # after the weights are written, before the config is
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    second = peftplug.apply(tiny_bert_classifier(seed=1), "lora", {"lora": {"r": 4}})
    with pytest.raises(OSError, match="No space left"):
        peftplug.save_adapter(second, tmp_path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
    ]
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path)
    expected = peftplug.trainable_parameters(first)
    assert peftplug.trainable_parameters(loaded) == expected
    for (name, a), (_, b) in zip(first.named_parameters(), loaded.named_parameters(), strict=True):
        if a.requires_grad:
            assert torch.equal(a, b), name


def test_saving_a_plain_model_says_how_to_apply(tmp_path: Path) -> None:
    with pytest.raises(peftplug.PeftplugError, match="peftplug.apply"):
        peftplug.save_adapter(tiny_bert_classifier(), tmp_path)


def test_loading_the_same_adapter_name_twice_is_refused(tmp_path: Path) -> None:
    _trained_adapter(tmp_path)
    model = peftplug.load_adapter(tiny_bert_classifier(), tmp_path)
    with pytest.raises(peftplug.AdapterLoadError, match="already has adapter"):
        peftplug.load_adapter(model, tmp_path)


def test_saved_files_follow_the_umask_like_any_other_file(tmp_path: Path) -> None:
    model = peftplug.apply(tiny_bert_classifier(), "lora", {"lora": {"r": 4}})
    adapter = peftplug.save_adapter(model, tmp_path / "adapter")
    (tmp_path / "plain").write_bytes(b"")  # created the ordinary way, under the same umask
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (adapter / name).stat().st_mode & 0o777 == expected
