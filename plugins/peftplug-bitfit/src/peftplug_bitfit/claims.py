"""The parameters a BitFit adapter owns, recorded on the model so saving finds exactly them.

The tensors themselves are recorded, not their names: a method applied later may wrap a module
(``query.bias`` becomes ``query.base_layer.bias``), and saving must use the name of the day.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from peftplug import ConfigError, PeftplugError

CLAIMS_ATTRIBUTE = "_peftplug_bitfit_parameters"


def claim(
    model: nn.Module, adapter_name: str, parameters: list[nn.Parameter]
) -> Callable[[], None]:
    """Record ``parameters`` as adapter ``adapter_name``'s; returns the callable that forgets them.

    BitFit trains the model's own tensors in place, so two BitFit adapters could not be told
    apart or switched: a model holds at most one.
    """
    existing: dict[str, list[nn.Parameter]] = getattr(model, CLAIMS_ATTRIBUTE, {})
    if existing:
        (other,) = existing
        raise ConfigError(
            f"this model already has a BitFit adapter ({other!r}), and BitFit trains the model's "
            "own biases in place, so a second one would share them: save it and "
            f"peftplug.delete_adapter(model, {other!r}) first, or use a method that adds its own "
            "weights (lora) for the second adapter"
        )
    setattr(model, CLAIMS_ATTRIBUTE, {adapter_name: parameters})

    def forget() -> None:
        delattr(model, CLAIMS_ATTRIBUTE)

    return forget


def claimed_parameters(model: nn.Module, adapter_name: str) -> dict[str, nn.Parameter]:
    """The live parameters adapter ``adapter_name`` owns, by their current ``state_dict`` names."""
    parameters = getattr(model, CLAIMS_ATTRIBUTE, {}).get(adapter_name, [])
    names = {id(p): name for name, p in model.named_parameters()}
    if any(id(p) not in names for p in parameters):
        raise PeftplugError(
            f"parameters BitFit adapter {adapter_name!r} trains are no longer in the model (a "
            "module was replaced outside peftplug after it was applied); apply BitFit again"
        )
    return {names[id(p)]: p for p in parameters}
