"""A cheap fingerprint of a base model's weights, so an adapter refuses a different base.

A few values of every floating-point tensor, read at evenly spaced positions before any method
changes the model. Two fingerprints match where every shared tensor's values agree within one
rounding of the coarser dtype (so a bf16 copy of the same base matches), and differ for another
checkpoint of the same architecture (whose values differ everywhere, not in the last bit).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import nn

from peftplug.errors import AdapterLoadError
from peftplug.saved_modules import saved_module_layers
from peftplug.sharded import full_tensor
from peftplug.state import AppliedMethod, PeftState, peft_state

VALUES_PER_TENSOR = 4
Fingerprint = dict[str, dict[str, Any]]


def fingerprint(model: nn.Module) -> Fingerprint:
    """``{name: {"dtype", "numel", "values"}}`` for each floating tensor of ``model.state_dict()``.

    Tensors on the meta device hold no values and are left out. A model already sharded by
    FSDP2 has each ``DTensor`` gathered whole in turn: a collective, so every rank calls this.
    """
    prints: Fingerprint = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or tensor.is_meta or tensor.numel() == 0:
            continue
        positions = torch.linspace(0, tensor.numel() - 1, VALUES_PER_TENSOR).round().long()
        index = torch.unravel_index(positions, tensor.shape) if tensor.dim() else ()
        values = full_tensor(tensor.detach())[index].to("cpu", torch.float64).reshape(-1).tolist()
        prints[name] = {
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "numel": tensor.numel(),
            "values": values,
        }
    return prints


def without(prints: Fingerprint, names: Collection[str], prefixes: Collection[str]) -> Fingerprint:
    """``prints`` less the tensors an adapter carries itself (its own copies replace them)."""
    return {
        name: entry
        for name, entry in prints.items()
        if name not in names and not any(name.startswith(f"{p}.") for p in prefixes)
    }


def differing(recorded: Mapping[str, Mapping[str, Any]], here: Fingerprint) -> list[str]:
    """Names of the tensors in both fingerprints whose values differ by more than rounding."""
    return [
        name
        for name, entry in recorded.items()
        if name in here
        and here[name]["numel"] == entry.get("numel")
        and not _agree(entry, here[name])
    ]


def _agree(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two samples are one base, each rounded once (to nearest) to its own dtype."""
    coarse = [_finfo(first.get("dtype")), _finfo(second.get("dtype"))]
    eps = max(info.eps for info in coarse)  # two roundings of half an ulp each, at most
    tiny = max(info.tiny for info in coarse)  # values below the smallest normal may flush to 0
    pairs = list(zip(first.get("values", []), second["values"], strict=False))
    return len(pairs) == len(second["values"]) and all(
        abs(a - b) <= eps * max(abs(a), abs(b)) + tiny for a, b in pairs
    )


def _finfo(dtype: object) -> torch.finfo:
    candidate = getattr(torch, str(dtype), None)
    if isinstance(candidate, torch.dtype) and candidate.is_floating_point:
        return torch.finfo(candidate)
    return torch.finfo(torch.float64)  # an unknown dtype: compare exactly (up to fp64 rounding)


def adapter_fingerprint(
    model: nn.Module, state: PeftState, methods: Collection[AppliedMethod], tensors: Collection[str]
) -> Fingerprint:
    """What an adapter records of its base: the fingerprint less what the adapter carries.

    The adapter's own tensors (``tensors``, state-dict names; in-place ones replace the base's)
    and the modules it keeps a copy of (task heads) do not have to match on load.
    """
    heads = {
        path
        for applied in methods
        for path in saved_module_layers(model, applied.adapter_name, applied.spec.name)
    }
    carried = {name.replace(".base_layer", "") for name in tensors}
    return without(state.base_fingerprint or {}, carried, heads)


def check_same_base(base_model: Mapping[str, Any], model: nn.Module) -> None:
    """Refuse ``model`` if its weights differ from the base the adapter recorded."""
    recorded = base_model.get("fingerprint")
    if not isinstance(recorded, Mapping) or not recorded:
        return  # an adapter written before fingerprints, or a Trainer checkpoint
    state = peft_state(model)
    here = state.base_fingerprint if state is not None else fingerprint(model)
    changed = differing(recorded, here or {})
    if not changed:
        return
    first = changed[0]
    compared = sum(1 for name in recorded if name in (here or {}))
    this_model = getattr(getattr(model, "config", None), "name_or_path", None)
    raise AdapterLoadError(
        f"the adapter was trained on a different base model: {len(changed)} of {compared} "
        f"compared tensors differ, first {first} (values {_short(recorded[first]['values'])} "
        f"recorded, {_short(here[first]['values'])} here). It was made for {base_model.get('name_or_path')!r}; "
        f"this model is {this_model or type(model).__name__!r}. Load the base it was trained "
        "on, or pass allow_base_mismatch=True to load it anyway"
    )


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.4g}" for value in values) + "]"
