"""An adapter refuses a base whose weights differ from the one it was trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import peftplug
from peftplug.serialization import method_tensors, read_adapter
from peftplug.state import peft_state
from peftplug.testing.model_snapshot import assert_model_unchanged, model_snapshot
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier, tiny_llama


def trained_adapter(directory: Path, method: str = "lora", make=tiny_bert_classifier) -> Path:
    """``method`` applied to a fresh base, its trainable tensors moved, saved."""
    model = peftplug.apply(make(), [method])
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.25)
    return peftplug.save_adapter(model, directory)


def logits(model: nn.Module) -> torch.Tensor:
    batch = classification_batch()
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_another_checkpoint_of_the_architecture_is_refused(tmp_path: Path) -> None:
    adapter = trained_adapter(tmp_path / "a")
    other = tiny_bert_classifier(seed=1)
    before = model_snapshot(other)
    with pytest.raises(peftplug.AdapterLoadError) as caught:
        peftplug.load_adapter(other, adapter)
    message = str(caught.value)
    assert "trained on a different base model: 39 of 39 compared tensors differ" in message
    assert "It was made for 'BertForSequenceClassification'; this model is" in message
    assert "allow_base_mismatch=True" in message
    assert_model_unchanged(other, before)


def test_a_different_base_under_an_earlier_adapter_is_refused(tmp_path: Path) -> None:
    adapter = trained_adapter(tmp_path / "a")
    other = peftplug.apply(tiny_bert_classifier(seed=1), ["bitfit"], adapter_name="first")
    before = model_snapshot(other)
    with pytest.raises(peftplug.AdapterLoadError, match="trained on a different base model"):
        peftplug.load_adapter(other, adapter)
    assert_model_unchanged(other, before)


def test_the_override_loads_onto_another_base(tmp_path: Path) -> None:
    adapter = trained_adapter(tmp_path / "a")
    loaded = peftplug.load_adapter(tiny_bert_classifier(seed=1), adapter, allow_base_mismatch=True)
    _, saved = read_adapter(adapter)
    live = method_tensors(loaded, peft_state(loaded))
    assert live.keys() == saved.keys()
    assert all(torch.equal(live[key], tensor) for key, tensor in saved.items())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_same_base_in_a_lower_precision_loads(tmp_path: Path, dtype: torch.dtype) -> None:
    adapter = trained_adapter(tmp_path / "a")
    peftplug.load_adapter(tiny_bert_classifier().to(dtype), adapter)


@pytest.mark.parametrize("method", ["bitfit", "full", "head"])
def test_tensors_an_adapter_trains_in_place_need_not_match(tmp_path: Path, method: str) -> None:
    adapter = trained_adapter(tmp_path / "a", method)
    trained = peftplug.load_adapter(tiny_bert_classifier(), adapter)
    reference = peftplug.apply(tiny_bert_classifier(), [method])
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.requires_grad:
                parameter.add_(0.25)
    assert torch.equal(logits(trained), logits(reference))


def test_a_task_head_the_adapter_carries_need_not_match(tmp_path: Path) -> None:
    adapter = trained_adapter(tmp_path / "a")  # LoRA keeps its own copy of the classifier
    other = tiny_bert_classifier()
    with torch.no_grad():
        other.classifier.weight.normal_()  # as from_pretrained(num_labels=...) draws a new head
    peftplug.load_adapter(other, adapter)


def test_the_fingerprint_is_of_the_base_before_quantisation(tmp_path: Path) -> None:
    model = peftplug.apply(tiny_llama(), ["qlora"], {"qlora": {"target_modules": ["q_proj"]}})
    adapter = peftplug.save_adapter(model, tmp_path / "q")
    peftplug.load_adapter(tiny_llama(), adapter)
    with pytest.raises(peftplug.AdapterLoadError, match="different base model"):
        peftplug.load_adapter(tiny_llama(seed=3), adapter)


def test_a_model_on_the_meta_device_is_refused(tmp_path: Path) -> None:
    adapter = trained_adapter(tmp_path / "a")
    with torch.device("meta"):
        empty = tiny_bert_classifier()
    before = {n: type(m) for n, m in empty.named_modules()}
    with pytest.raises(peftplug.AdapterLoadError, match="weights are on the meta device"):
        peftplug.load_adapter(empty, adapter)
    assert {n: type(m) for n, m in empty.named_modules()} == before
    assert peft_state(empty) is None
