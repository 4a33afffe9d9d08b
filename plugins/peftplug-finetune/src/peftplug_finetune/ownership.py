"""Which parameters each applied fine-tuning method owns, recorded by identity.

Methods that train parameters in place own the tensors they unfroze. Recording the tensors
themselves (not their names) keeps ownership right when another method later wraps a module
(``query.weight`` becomes ``query.base_layer.weight``) or adds parameters inside an owned block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from peftplug import ConfigError, PeftplugError

OWNED_ATTRIBUTE = "_peftplug_finetune_owned"


def owner_label(method: str, adapter_name: str) -> str:
    """How one applied method is named in the record and in errors."""
    return f"{method!r} (adapter {adapter_name!r})"


def claim(
    model: nn.Module, owner: str, parameters: list[tuple[str, nn.Parameter]]
) -> Callable[[], None]:
    """Unfreeze ``parameters`` for ``owner`` and return the callable that gives them back.

    A parameter that already trains belongs to a method applied earlier: two in-place methods
    cannot share it (each adapter would save, load and switch the same tensor).
    """
    owned: dict[str, list[nn.Parameter]] = model.__dict__.get(OWNED_ATTRIBUTE, {})
    for name, parameter in parameters:
        if parameter.requires_grad:
            holder = next(
                (label for label, ps in owned.items() if any(p is parameter for p in ps)),
                "a method applied earlier",
            )
            raise ConfigError(
                f"{owner} would train {name!r}, which {holder} already trains: methods that "
                "train parameters in place cannot share them; apply one of them, or "
                "peftplug.unload(model) first"
            )
    owned[owner] = [parameter for _, parameter in parameters]
    model.__dict__[OWNED_ATTRIBUTE] = owned
    for _, parameter in parameters:
        parameter.requires_grad_(True)

    def release() -> None:
        for parameter in owned.pop(owner, []):
            parameter.requires_grad_(False)
        if not owned:
            model.__dict__.pop(OWNED_ATTRIBUTE, None)

    return release


def owned_tensors(model: nn.Module, owner: str) -> dict[str, torch.Tensor]:
    """The live parameters ``owner`` trains, keyed by their current ``model.state_dict()`` names."""
    parameters = model.__dict__.get(OWNED_ATTRIBUTE, {}).get(owner)
    if parameters is None:
        raise PeftplugError(f"{owner} owns no parameters of this model: apply it first")
    names = {id(p): name for name, p in model.named_parameters()}
    missing = [p for p in parameters if id(p) not in names]
    if missing:
        raise PeftplugError(
            f"{len(missing)} parameter(s) {owner} trains are no longer in the model (a module "
            "was replaced after the method was applied); apply the method again"
        )
    return {names[id(p)]: p for p in parameters}
