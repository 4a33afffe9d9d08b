"""The ledger of base parameters that methods train in place (BitFit's biases, fine-tuning).

Each entry is recorded as a module and the attribute name of its parameter, not as a name path
or a tensor: a method applied later may wrap the module (``query.bias`` becomes
``query.base_layer.bias``), and ``model.to(...)`` may replace the parameter objects; the module
and the attribute survive both. A method trains a parameter in place only if no other does, and
a model holds at most one adapter of each in-place method: training in place cannot be switched
off, so two such adapters would always run together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from peftplug.errors import ConfigError, PeftplugError

LEDGER_ATTRIBUTE = "_peftplug_in_place"


@dataclasses.dataclass(frozen=True)
class Owner:
    """One applied method under one adapter name."""

    method: str
    adapter_name: str

    def __str__(self) -> str:
        return f"{self.method!r} (adapter {self.adapter_name!r})"


Ledger = dict[Owner, list[tuple[nn.Module, str]]]


def _ledger(model: nn.Module) -> Ledger:
    return model.__dict__.get(LEDGER_ATTRIBUTE, {})


def train_in_place(
    model: nn.Module, owner: Owner, parameters: list[tuple[str, nn.Parameter]]
) -> Callable[[], None]:
    """Unfreeze ``parameters`` (named as in ``model``) for ``owner``; returns the release."""
    if not parameters:
        return lambda: None
    ledger = _ledger(model)
    other = next((o for o in ledger if o.method == owner.method), None)
    if other is not None:
        raise ConfigError(
            f"this model already has a {owner.method!r} adapter ({other.adapter_name!r}), and "
            f"{owner.method!r} trains the model's own parameters in place, so a second one would "
            f"share them: save it and peftplug.delete_adapter(model, {other.adapter_name!r}) "
            "first, or use a method that adds its own weights (lora) for the second adapter"
        )
    for name, parameter in parameters:
        if parameter.requires_grad:
            holder = next(
                (str(o) for o, entries in ledger.items() if _holds(entries, parameter)), None
            )
            raise ConfigError(
                f"{owner} would train {name!r}, which {holder or 'a method applied earlier'} "
                "already trains: methods that train parameters in place cannot share them; apply "
                "one of them, or peftplug.unload(model) first"
            )
    entries = []
    for name, parameter in parameters:
        path, _, attribute = name.rpartition(".")
        entries.append((model.get_submodule(path), attribute))
        parameter.requires_grad_(True)
    model.__dict__[LEDGER_ATTRIBUTE] = {**ledger, owner: entries}

    def release() -> None:
        remaining = dict(_ledger(model))
        for module, attribute in remaining.pop(owner, []):
            module._parameters[attribute].requires_grad_(False)
        if remaining:
            model.__dict__[LEDGER_ATTRIBUTE] = remaining
        else:
            model.__dict__.pop(LEDGER_ATTRIBUTE, None)

    return release


def _holds(entries: list[tuple[nn.Module, str]], parameter: nn.Parameter) -> bool:
    return any(module._parameters.get(attribute) is parameter for module, attribute in entries)


def in_place_tensors(model: nn.Module, owner: Owner) -> dict[str, nn.Parameter]:
    """The live parameters ``owner`` trains in place, by their current ``state_dict`` names."""
    entries = _ledger(model).get(owner, [])
    names = {id(p): name for name, p in model.named_parameters()}
    current = [module._parameters.get(attribute) for module, attribute in entries]
    missing = sum(1 for p in current if p is None or id(p) not in names)
    if missing:
        raise PeftplugError(
            f"{missing} parameter(s) {owner} trains are no longer in the model (a module was "
            "replaced outside peftplug after the method was applied); apply the method again"
        )
    return {names[id(p)]: p for p in current if p is not None}
