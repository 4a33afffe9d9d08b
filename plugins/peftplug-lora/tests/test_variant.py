"""The LoRA variant example of docs/writing-a-plugin.md, run as written, gets all of LoRA for free."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peftplug_lora import LoraLinear
from torch import nn

import peftplug
from peftplug.plugins import get_host, reset_host
from peftplug.serialization import method_tensors
from peftplug.state import peft_state
from peftplug.testing import MethodConformance

DOC = Path(__file__).resolve().parents[3] / "docs" / "writing-a-plugin.md"
PACKAGE = "peftplug_gated_lora"


def _documented_modules() -> dict[str, types.ModuleType]:
    """The doc's ``peftplug_gated_lora/<name>.py`` blocks, executed as modules of that package."""
    blocks = re.findall(rf"```python\n# {PACKAGE}/(\w+)\.py[^\n]*\n(.*?)```", DOC.read_text(), re.S)
    modules = {PACKAGE: types.ModuleType(PACKAGE)}
    modules[PACKAGE].__path__ = []
    sys.modules[PACKAGE] = modules[PACKAGE]
    for name, source in blocks:  # the variant first: the plugin imports it
        module = modules[f"{PACKAGE}.{name}"] = types.ModuleType(f"{PACKAGE}.{name}")
        sys.modules[module.__name__] = module  # dataclasses and imports look modules up here
        exec(compile(source, str(DOC), "exec"), module.__dict__)
    return modules


@pytest.fixture(autouse=True)
def gated_lora_installed() -> Iterator[None]:
    modules = _documented_modules()
    get_host().add_plugin(modules[f"{PACKAGE}.plugin"], "gated-lora", "peftplug-gated-lora", "0.1")
    yield
    reset_host()
    for name in modules:
        sys.modules.pop(name, None)


def test_the_gate_scales_the_update_trains_and_is_saved() -> None:
    options = {"r": 2, "target_modules": ["0"]}
    model = peftplug.apply(nn.Sequential(nn.Linear(6, 5)), "gated-lora", {"gated-lora": options})
    layer = model[0]
    assert isinstance(layer, LoraLinear)
    nn.init.normal_(layer.lora_B["default"].weight)
    gate = layer.lora_variant["default"].gate
    gate.data.fill_(0.25)
    x = torch.randn(3, 6)
    with torch.no_grad():
        expected = layer.base_layer(x) + 0.25 * x @ layer.delta_weight("default").T
        torch.testing.assert_close(layer(x), expected)
    assert gate.requires_grad
    assert method_tensors(model, peft_state(model))["0.lora_variant.default.gate"] is gate


class TestDocumentedGatedLora(MethodConformance):
    method = "gated-lora"
    config = {"r": 4, "target_modules": ["query", "value"]}
