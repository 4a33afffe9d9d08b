"""The adapter layer: wraps a sub-layer's output module and adds named bottleneck adapters."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from peftplug import AdapterLayer, PeftplugError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": nn.functional.relu,
    "swish": nn.functional.silu,
    "gelu": nn.functional.gelu,
    "tanh": torch.tanh,
}


@dataclasses.dataclass(frozen=True)
class AdapterSettings:
    """How one named adapter runs."""

    non_linearity: str
    scaling: float
    parallel: bool


def _adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    """Adapters train in fp32 unless the base is fp32/fp64 already (as LoRA does)."""
    return weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32


class BottleneckAdapterLayer(AdapterLayer):
    """``h + s * up(f(down(h)))`` on the base output ``h`` (sequential adapters), or
    ``h + s * up(f(down(x)))`` with ``x`` the sub-layer input captured by a hook (parallel).
    """

    mergeable = False
    not_mergeable_reason = (
        "a bottleneck adapter applies a non-linearity between its down- and up-projection, "
        "so its update depends on the input and cannot be folded into a weight matrix; "
        "inference runs with the adapter modules in place (peftplug.unload removes them)"
    )

    def __init__(self, base_layer: nn.Module, hidden_size: int) -> None:
        super().__init__(base_layer)
        self.hidden_size = hidden_size
        self.adapter_down = nn.ModuleDict()
        self.adapter_up = nn.ModuleDict()
        self.settings: dict[str, AdapterSettings] = {}
        self.input_hooks: dict[str, RemovableHandle] = {}
        self.sublayer_input: torch.Tensor | None = None

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapter_down.keys())

    def add_adapter(
        self,
        name: str,
        bottleneck: int,
        settings: AdapterSettings,
        sublayer_input: nn.Module | None = None,
    ) -> None:
        """Create adapter ``name``; its up-projection starts at zero, so the output is unchanged.

        A parallel adapter reads the input of ``sublayer_input``, captured by a forward pre-hook.
        """
        reference = next(self.base_layer.parameters())
        options = {"device": reference.device, "dtype": _adapter_dtype(reference)}
        down = nn.Linear(self.hidden_size, bottleneck, **options)
        up = nn.Linear(bottleneck, self.hidden_size, **options)
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        nn.init.zeros_(down.bias)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        self.adapter_down[name] = down
        self.adapter_up[name] = up
        self.settings[name] = settings
        if settings.parallel:
            if sublayer_input is None:
                raise PeftplugError(f"parallel adapter {name!r} needs the sub-layer's input module")
            self.input_hooks[name] = sublayer_input.register_forward_pre_hook(
                self._capture_sublayer_input, with_kwargs=True
            )

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.adapter_down[name].parameters()
        yield from self.adapter_up[name].parameters()

    def delete_adapter(self, name: str) -> None:
        for projections in (self.adapter_down, self.adapter_up):
            if name in projections:
                del projections[name]
        self.settings.pop(name, None)
        handle = self.input_hooks.pop(name, None)
        if handle is not None:
            handle.remove()
        if self.active_adapter == name:
            self.active_adapter = None
        self.sublayer_input = None

    def _runs_parallel(self) -> bool:
        return self.adapter_active() and self.settings[self.active_adapter].parallel

    def _capture_sublayer_input(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if not self._runs_parallel():
            return
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, torch.Tensor):
            raise PeftplugError(
                f"{type(module).__name__} was called without its hidden states as first argument "
                "or as hidden_states=, so a parallel adapter cannot read the sub-layer input: fix "
                "the *_input paths of this model's BlockLayout (peftplug.blocks.register_layout)"
            )
        self.sublayer_input = hidden

    def _take_sublayer_input(self) -> torch.Tensor:
        hidden, self.sublayer_input = self.sublayer_input, None  # do not keep activations alive
        if hidden is None:
            raise PeftplugError(
                "a parallel adapter ran before its sub-layer input was seen: the BlockLayout's "
                "*_input module must run before its *_output module (peftplug.blocks)"
            )
        return hidden

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        output = self.base_layer(x, *args, **kwargs)
        if not self.adapter_active():
            return output
        if not isinstance(output, torch.Tensor):
            raise PeftplugError(
                f"{type(self.base_layer).__name__} returns {type(output).__name__}, not a tensor: "
                "a BlockLayout's *_output must be the module whose output is the sub-layer's "
                "hidden states"
            )
        name = self.active_adapter
        settings = self.settings[name]
        source = self._take_sublayer_input() if settings.parallel else output
        down = self.adapter_down[name]
        hidden = ACTIVATIONS[settings.non_linearity](down(source.to(down.weight.dtype)))
        update = self.adapter_up[name](hidden)
        return output + settings.scaling * update.to(output.dtype)

    def extra_repr(self) -> str:
        widths = {name: down.out_features for name, down in self.adapter_down.items()}
        return f"hidden={self.hidden_size}, bottlenecks={widths}"
