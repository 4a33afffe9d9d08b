"""Everything a failed call must leave alone, captured and compared bit for bit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peftplug.state import peft_state


def model_snapshot(model: nn.Module) -> dict[str, Any]:
    """Tensors, module types, ``requires_grad`` flags, hook counts, peftplug's state and record."""
    state = peft_state(model)
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "types": {n: type(m) for n, m in model.named_modules()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()
        },
        "state": None
        if state is None
        else ([m.record() for m in state.methods], state.active_adapter),
        "record": getattr(getattr(model, "config", None), "peftplug", None),
    }


def assert_model_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    """Fail unless ``model`` matches the ``model_snapshot`` taken as ``before`` exactly."""
    after = model_snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    changed = [k for k, v in before["tensors"].items() if not torch.equal(after["tensors"][k], v)]
    assert not changed, f"tensors changed: {changed[:5]}"
    for key in ("types", "flags", "hooks", "state", "record"):
        assert after[key] == before[key], key
