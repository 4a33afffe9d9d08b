"""Adapter files that would load wrong are refused: NaN/Inf tensors and edited configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import peftplug
from peftplug.state import peft_state
from peftplug.testing.tiny_models import tiny_bert_classifier


def lora_model() -> nn.Module:
    return peftplug.apply(tiny_bert_classifier(), ["lora"], {"lora": {"r": 2}})


def first_lora_b(model: nn.Module) -> torch.Tensor:
    return next(p for n, p in model.named_parameters() if ".lora_B." in n)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_tensor_is_refused_on_save_unless_allowed(tmp_path: Path, bad: float) -> None:
    model = lora_model()
    with torch.no_grad():
        first_lora_b(model)[0, 0] = bad
    with pytest.raises(peftplug.AdapterSaveError, match="lora_B.*NaN or Inf.*allow_non_finite"):
        peftplug.save_adapter(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()
    peftplug.save_adapter(model, tmp_path / "adapter", allow_non_finite=True)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_a_non_finite_tensor_is_refused_on_load_and_the_model_is_untouched(tmp_path: Path) -> None:
    model = lora_model()
    with torch.no_grad():
        first_lora_b(model)[0, 0] = float("nan")
    peftplug.save_adapter(model, tmp_path / "adapter", allow_non_finite=True)
    target = tiny_bert_classifier()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(peftplug.AdapterLoadError, match="lora_B.*NaN or Inf"):
        peftplug.load_adapter(target, tmp_path / "adapter")
    assert peft_state(target) is None
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    loaded = peftplug.load_adapter(target, tmp_path / "adapter", allow_non_finite=True)
    assert torch.isnan(first_lora_b(loaded)).any()


@pytest.mark.parametrize(
    ("path", "value"),
    [(("methods", 0, "config", "alpha"), 64.0), (("active_adapter",), "other"), (("tensors",), {})],
)
def test_an_edited_config_is_refused(tmp_path: Path, path: tuple, value: object) -> None:
    peftplug.save_adapter(lora_model(), tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    holder = config
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    config_path.write_text(json.dumps(config, indent=2))
    target = tiny_bert_classifier()
    with pytest.raises(peftplug.AdapterLoadError, match="changed after it was saved"):
        peftplug.load_adapter(target, tmp_path / "adapter")
    assert peft_state(target) is None


def test_an_unedited_config_still_loads_exactly(tmp_path: Path) -> None:
    model = lora_model()
    with torch.no_grad():
        first_lora_b(model).normal_()
    peftplug.save_adapter(model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path / "adapter")
    assert torch.equal(first_lora_b(loaded), first_lora_b(model))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format": None, "peft_type": None}, "is not a peftplug adapter"),
        ({"format_version": None}, "invalid format_version None"),
        ({"format_version": 0}, "invalid format_version 0"),
        ({"format_version": "1"}, "invalid format_version '1'"),
        ({"format_version": 3}, "newer than this peftplug reads"),
        ({"format": None, "peft_type": "LORA"}, "is an HF PEFT adapter"),
    ],
)
def test_each_format_problem_gets_its_own_message(tmp_path: Path, edit: dict, message: str) -> None:
    peftplug.save_adapter(lora_model(), tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = {**json.loads(config_path.read_text()), **edit}
    config_path.write_text(json.dumps(config))
    with pytest.raises(peftplug.AdapterLoadError, match=message):
        peftplug.load_adapter(tiny_bert_classifier(), tmp_path / "adapter")
