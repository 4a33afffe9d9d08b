"""peftplug: parameter-efficient fine-tuning methods as plugins for the stock Trainer."""

from peftplug.apply import (
    apply,
    delete_adapter,
    disable_adapters,
    set_active_adapter,
    unload,
)
from peftplug.apply import merge_adapters as merge
from peftplug.apply import unmerge_adapters as unmerge
from peftplug.config import MethodConfig
from peftplug.errors import (
    AdapterLoadError,
    ConfigError,
    NotMergeableError,
    PeftplugError,
    PluginLoadError,
    PluginNotFoundError,
    TargetError,
)
from peftplug.hookspecs import hookimpl
from peftplug.layers import AdapterLayer, get_base_weight, set_base_weight
from peftplug.methods import MethodSpec
from peftplug.optim import ParamGroup
from peftplug.report import TrainableReport, trainable_parameters
from peftplug.serialization import load_adapter, save_adapter
from peftplug.targets import TargetedConfig
from peftplug.trainer import PeftArguments, trainer_kwargs

__all__ = [
    "AdapterLayer",
    "AdapterLoadError",
    "ConfigError",
    "MethodConfig",
    "MethodSpec",
    "NotMergeableError",
    "ParamGroup",
    "PeftArguments",
    "PeftplugError",
    "PluginLoadError",
    "PluginNotFoundError",
    "TargetError",
    "TargetedConfig",
    "TrainableReport",
    "apply",
    "delete_adapter",
    "disable_adapters",
    "get_base_weight",
    "hookimpl",
    "load_adapter",
    "merge",
    "save_adapter",
    "set_active_adapter",
    "set_base_weight",
    "trainable_parameters",
    "trainer_kwargs",
    "unload",
    "unmerge",
]
