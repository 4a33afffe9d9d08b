"""What a plugin registers: a named method with its config class."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from peftplug.config import MethodConfig
from peftplug.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ComparisonDefaults:
    """How ``peftplug compare`` runs a method when the user sets nothing for it.

    ``learning_rate``: a rate that works for a short run (a few hundred steps).
    ``options``: method options for the comparison (e.g. ``{"last_k": 2}``); users override
    them with ``--config <method>.<option>=<value>``.
    """

    learning_rate: float = 1e-3
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

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
        unknown = sorted(set(value) - {"learning_rate", "options"})
        if unknown:
            raise ConfigError(
                f"method {method!r}: unknown comparison key(s) {', '.join(unknown)}; "
                "valid keys: learning_rate, options"
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
        return cls(float(learning_rate), dict(options))


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A fine-tuning method: the name users pass in ``peft_plugins`` and its config class.

    ``comparison`` (optional): the learning rate and options ``peftplug compare`` uses for this
    method, as a ``ComparisonDefaults`` or a mapping with its keys; ``None`` means 1e-3 and the
    config's own defaults. ``plugin``, ``distribution`` and ``version`` are filled in by the
    plugin host.
    """

    name: str
    config_class: type[MethodConfig]
    description: str = ""
    plugin: str = ""
    distribution: str = ""
    version: str = ""
    comparison: ComparisonDefaults | Mapping[str, Any] | None = None

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
