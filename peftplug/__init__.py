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
from peftplug.contracts import ComparisonDefaults, MethodSpec, ParamGroup, PeftEquivalent
from peftplug.errors import (
    AdapterLoadError,
    AdapterSaveError,
    ConfigError,
    NotMergeableError,
    PeftplugError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    TargetError,
)
from peftplug.export import export_peft
from peftplug.hookspecs import hookimpl
from peftplug.import_peft import import_peft
from peftplug.layers import AdapterLayer, get_base_weight, set_base_weight
from peftplug.optim import build_param_groups
from peftplug.report import TrainableReport, trainable_parameters
from peftplug.saved_modules import SavedModuleLayer
from peftplug.serialization import load_adapter, save_adapter
from peftplug.targets import TargetedConfig
from peftplug.trainer import PeftArguments, trainer_kwargs

__all__ = [
    "AdapterLayer",
    "AdapterLoadError",
    "AdapterSaveError",
    "ComparisonDefaults",
    "ConfigError",
    "MethodConfig",
    "MethodSpec",
    "NotMergeableError",
    "ParamGroup",
    "PeftArguments",
    "PeftEquivalent",
    "PeftplugError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "SavedModuleLayer",
    "TargetError",
    "TargetedConfig",
    "TrainableReport",
    "apply",
    "build_param_groups",
    "delete_adapter",
    "disable_adapters",
    "export_peft",
    "get_base_weight",
    "hookimpl",
    "import_peft",
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
