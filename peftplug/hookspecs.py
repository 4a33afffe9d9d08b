"""Every hook a peftplug plugin can implement.

Hooks are called with keyword arguments. Each method-level hook receives the method's typed
config; an implementation acts only on configs of its own class and returns ``None`` otherwise,
so ``firstresult`` hooks resolve to the plugin that owns the config. Hooks only ever gain
arguments; none is renamed or removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    import torch
    from torch import nn
    from transformers import TrainerCallback, TrainingArguments

    from peftplug.config import MethodConfig
    from peftplug.contracts import MethodSpec, ParamGroup, PeftEquivalent

hookspec = pluggy.HookspecMarker("peftplug")
hookimpl = pluggy.HookimplMarker("peftplug")


@hookspec
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the methods this plugin provides by calling ``register(MethodSpec(...))``.

    A method has a name users pass in ``peft_plugins`` and a config class. One plugin may
    register several methods.
    """


@hookspec
def peftplug_prepare_model(
    model: nn.Module, config: MethodConfig, adapter_name: str
) -> Callable[[], None] | None:
    """Change the model before target modules are replaced: unfreeze, quantize, attach hooks.

    peftplug freezes every base parameter before the first method is applied, so a method
    unfreezes what it trains. Return a callable that undoes any change that ``unload`` must
    reverse (peftplug restores ``requires_grad`` flags itself), or ``None``.
    """


@hookspec(firstresult=True)
def peftplug_replace_module(
    module: nn.Module, name: str, config: MethodConfig, adapter_name: str
) -> nn.Module | None:
    """Wrap one module matched by the config's ``target_modules``; ``None`` means "cannot".

    Called only for configs derived from ``TargetedConfig``. ``module`` may already be an
    ``AdapterLayer`` of this method (a second named adapter): add to it and return it.
    """


@hookspec(firstresult=True)
def peftplug_modules_to_save(
    model: nn.Module, config: MethodConfig, adapter_name: str
) -> list[str] | None:
    """Module paths this method trains in full beside its adapter (the task head), or ``None``.

    Called after ``peftplug_replace_module``. The core wraps each in a ``SavedModuleLayer``
    that gives every adapter its own trainable copy, saves it with the adapter, and takes it
    off again; ``peftplug.saved_modules.resolve_modules_to_save`` turns a user's
    ``modules_to_save`` option (names or ``"auto"`` for the task head) into paths.
    """


@hookspec(firstresult=True)
def peftplug_state_dict(
    model: nn.Module, config: MethodConfig, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    """The method's own tensors for this adapter, keyed by their ``model.state_dict()`` names.

    The tensors must be the live ones: loading copies saved values into them. peftplug
    does the file IO and raises on missing or unexpected keys.
    """


@hookspec(firstresult=True)
def peftplug_peft_equivalent(
    model: nn.Module, config: MethodConfig, adapter_name: str
) -> PeftEquivalent | None:
    """The method's HF PEFT equivalent for this adapter (config and tensors), or ``None``.

    ``peftplug.save_adapter`` writes an adapter of this one method in PEFT's layout from it;
    ``peftplug.export_peft`` builds the PEFT model from it and lets PEFT write its own files.
    Methods without a PEFT equivalent return ``None``: their adapters keep peftplug's layout
    and ``export_peft`` refuses them with a clear error. An equivalent computed from the live
    tensors gives its inverse as ``PeftEquivalent.load``, for ``peftplug.import_peft``.
    """


@hookspec(firstresult=True)
def peftplug_peft_training_config(model: nn.Module, config: MethodConfig) -> dict[str, Any] | None:
    """HF PEFT's config fields that train the same method with these options, or ``None``.

    ``model`` is the plain base it will train on (for defaults that depend on it, such as the
    target modules). The fields include ``peft_type``; the caller adds ``task_type`` and passes
    them to ``peft.get_peft_config``. ``peftplug compare --vs-peft`` trains this next to the
    method, for methods whose ``MethodSpec`` names a ``peft_type``.
    """


@hookspec(firstresult=True)
def peftplug_options_from_peft(peft_config: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The method and options that import this HF PEFT adapter config, or ``None`` if not yours.

    ``peft_config`` is PEFT's ``adapter_config.json`` (recognise it by ``peft_type``), its
    ``modules_to_save`` given as the model's paths PEFT wrapped (``[]`` for none). Raise
    ``ConfigError`` naming the field for a PEFT feature the method does not have.
    ``peftplug.import_peft`` applies the method and fills the tensors its
    ``peftplug_peft_equivalent`` names from PEFT's file (or has its ``load`` set them).
    """


@hookspec(firstresult=True)
def peftplug_param_groups(
    model: nn.Module, config: MethodConfig, adapter_name: str, args: TrainingArguments
) -> list[ParamGroup] | None:
    """Optimizer groups for this method's trainable parameters (e.g. LoRA+ ratios).

    Each ``ParamGroup(params, name, lr=None, weight_decay=None)`` takes ``args``' value for an
    option left ``None``; frozen parameters are dropped and a parameter in two groups is an
    error. Trainable parameters no method claims fall into the default groups (weight decay
    except on biases and norms), as the stock Trainer does. ``peftplug.build_param_groups``
    gathers them all into ``torch.optim`` groups.
    """


@hookspec(firstresult=True)
def peftplug_get_base_weight(module: nn.Module) -> torch.Tensor | None:
    """The dense ``(out_features, in_features)`` float weight of a base layer, or ``None``.

    Lets methods merge over layers they do not know (transposed Conv1D, 4-bit NF4 ...). What
    comes back may be the live weight (``nn.Linear``: ``weight.data``), a view of it
    (``Conv1D``: the transpose) or a new tensor (``NF4Linear``: dequantized), so writing into
    it changes the layer for some types and does nothing for others: treat it as read-only
    and store a changed weight with ``peftplug_set_base_weight``.
    """


@hookspec(firstresult=True)
def peftplug_set_base_weight(module: nn.Module, weight: torch.Tensor) -> Any:
    """Store a dense ``(out_features, in_features)`` weight into a base layer.

    The only way to change a base weight for every layer type (see
    ``peftplug_get_base_weight``). The layer keeps its own layout and dtype (``NF4Linear``
    quantizes again). Return a truthy value when handled (a quantizing layer may return its
    rounding error).
    """


@hookspec
def peftplug_trainer_callbacks(config: MethodConfig) -> list[TrainerCallback] | None:
    """Extra Trainer callbacks this method needs during training (schedules, re-allocation)."""


@hookspec
def peftplug_register_commands(commands: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``peftplug`` command line (``peftplug-compare`` adds ``compare``).

    Call ``commands.add_parser(name, help=...)`` and set the parser's ``run`` default to a
    function taking the parsed ``argparse.Namespace`` (its ``argv`` holds the command line) and
    returning the exit status. Raise ``peftplug.errors.PeftplugError`` for bad input: the CLI
    prints it in one line and exits 2. Import heavy modules inside ``run``, not here.
    """
