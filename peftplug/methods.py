"""What a plugin registers: a named method with its config class."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from peftplug.config import MethodConfig
from peftplug.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A fine-tuning method: the name users pass in ``peft_plugins`` and its config class.

    ``plugin``, ``distribution`` and ``version`` are filled in by the plugin host.
    """

    name: str
    config_class: type[MethodConfig]
    description: str = ""
    plugin: str = ""
    distribution: str = ""
    version: str = ""

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
