"""What plugins hand the core: ``MethodSpec`` (with ``ComparisonDefaults``), ``ParamGroup`` and
``PeftEquivalent``.

A leaf: it imports nothing from peftplug but the config base class and the errors, so every
other module (and every plugin) can use these types without import cycles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from peftplug.config import MethodConfig
from peftplug.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import TrainingArguments


@dataclasses.dataclass(frozen=True)
class ComparisonDefaults:
    """How ``peftplug compare`` runs a method when the user sets nothing for it.

    ``learning_rate``: a rate that works for a short run (a few hundred steps).
    ``options``: method options for the comparison (e.g. ``{"last_k": 2}``); users override
    them with ``--config <method>.<option>=<value>``.
    ``baseline``: a reference the PEFT methods are measured against (full or head-only
    fine-tuning) rather than one of them: listed first, left out by ``--no-baselines``.
    """

    learning_rate: float = 1e-3
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    baseline: bool = False

    @classmethod
    def from_value(
        cls, value: ComparisonDefaults | Mapping[str, Any], method: str
    ) -> ComparisonDefaults:
        """Defaults given as an instance or as a mapping with the same keys, strictly checked."""
        if isinstance(value, ComparisonDefaults):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"method {method!r}: comparison must be a mapping like "
                f"{{'learning_rate': 1e-3, 'options': {{...}}}}, got {type(value).__name__}"
            )
        unknown = sorted(set(value) - {"learning_rate", "options", "baseline"})
        if unknown:
            raise ConfigError(
                f"method {method!r}: unknown comparison key(s) {', '.join(unknown)}; "
                "valid keys: learning_rate, options, baseline"
            )
        learning_rate = value.get("learning_rate", cls.learning_rate)
        if not isinstance(learning_rate, int | float) or learning_rate <= 0:
            raise ConfigError(
                f"method {method!r}: comparison learning_rate must be a positive number, "
                f"got {learning_rate!r}"
            )
        options = value.get("options", {})
        if not isinstance(options, Mapping):
            raise ConfigError(f"method {method!r}: comparison options must be a mapping")
        baseline = value.get("baseline", False)
        if not isinstance(baseline, bool):
            raise ConfigError(f"method {method!r}: comparison baseline must be True or False")
        return cls(float(learning_rate), dict(options), baseline)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A fine-tuning method: the name users pass in ``peft_plugins`` and its config class.

    ``comparison`` (optional): the learning rate and options ``peftplug compare`` uses for this
    method, as a ``ComparisonDefaults`` or a mapping with its keys; ``None`` means 1e-3 and the
    config's own defaults. ``plugin``, ``distribution`` and ``version`` are filled in by the
    plugin host.

    What the method promises, checked by ``peftplug.testing.MethodConformance``:
    ``starts_at_base``: a freshly applied adapter leaves the model's outputs unchanged (LoRA's
    zero B, an adapter's zero up-projection); ``trains_in_place``: the method trains some of the
    base model's own parameters (BitFit's biases, full fine-tuning), so a model holds at most
    one such adapter and disabling or unloading cannot take its training back.
    ``peft_type``: the HF PEFT type the method corresponds to (``"LORA"``), if any; its plugin
    then answers ``peftplug_peft_training_config`` (``peftplug compare --vs-peft`` rows).
    """

    name: str
    config_class: type[MethodConfig]
    description: str = ""
    plugin: str = ""
    distribution: str = ""
    version: str = ""
    comparison: ComparisonDefaults | Mapping[str, Any] | None = None
    starts_at_base: bool = False
    trains_in_place: bool = False
    peft_type: str | None = None

    def __post_init__(self) -> None:
        if self.comparison is not None:
            defaults = ComparisonDefaults.from_value(self.comparison, self.name)
            object.__setattr__(self, "comparison", defaults)

    @property
    def comparison_defaults(self) -> ComparisonDefaults:
        """The declared comparison defaults, or the generic ones."""
        return (
            self.comparison
            if isinstance(self.comparison, ComparisonDefaults)
            else ComparisonDefaults()
        )

    def parse_config(self, values: Mapping[str, Any] | MethodConfig | None) -> MethodConfig:
        """A typed config from a dict (strictly checked) or an instance of the right class."""
        if values is None:
            values = {}
        if isinstance(values, MethodConfig):
            if not isinstance(values, self.config_class):
                raise ConfigError(
                    f"method {self.name!r} takes a {self.config_class.__name__}, "
                    f"got a {type(values).__name__}"
                )
            values.validate()
            return values
        return self.config_class.from_dict(values)

    def record(self) -> dict[str, str]:
        """Where the method comes from, as written into adapter files."""
        return {
            "method": self.name,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
        }


@dataclasses.dataclass
class ParamGroup:
    """One optimizer group a plugin returns from ``peftplug_param_groups``.

    ``params``: the group's parameters; frozen ones are dropped, and a parameter in two groups
    is an error. ``name``: a label for messages. ``lr`` and ``weight_decay``: ``None`` takes
    the Trainer's ``args.learning_rate`` / ``args.weight_decay``.
    """

    params: list[nn.Parameter]
    name: str = ""
    lr: float | None = None
    weight_decay: float | None = None

    def to_torch(self, args: TrainingArguments) -> dict[str, Any]:
        """The ``torch.optim`` group dict."""
        return {
            "params": self.params,
            "lr": args.learning_rate if self.lr is None else self.lr,
            "weight_decay": args.weight_decay if self.weight_decay is None else self.weight_decay,
        }


@dataclasses.dataclass(frozen=True)
class PeftEquivalent:
    """How one applied method is written as an HF PEFT adapter (``peftplug_peft_equivalent``).

    ``config``: PEFT config fields for the method, ``peft_type`` included (as in PEFT's
    ``adapter_config.json``); the core adds ``task_type``, ``modules_to_save`` and the base.
    ``tensors``: the adapter's live tensors under their names in the PEFT model, adapter name
    ``default`` (``PeftModel.named_parameters()``), e.g.
    ``base_model.model.<path>.lora_A.default.weight``. The task head copies are the core's.
    ``load``: for ``tensors`` computed from the live ones (a table PEFT saves), the inverse:
    given values under the names and shapes of ``tensors`` (as PEFT's file holds them: its
    dtype, on the CPU), it sets every live tensor of the adapter so the equivalent gives those
    values back (``peftplug.import_peft`` calls it under ``torch.no_grad()`` and checks that);
    ``None`` when ``tensors`` are the live ones.
    """

    config: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor]
    load: Callable[[Mapping[str, torch.Tensor]], None] | None = None
