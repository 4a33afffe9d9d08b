"""The stock ``transformers.Trainer``, patched through a callback and an optimizer factory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peftplug.apply import apply, options_per_method, resolve
from peftplug.checkpoint_manifest import set_aside_interrupted, verify_manifest, write_manifest
from peftplug.errors import ConfigError, PeftplugError
from peftplug.optim import build_param_groups
from peftplug.plugins import get_host
from peftplug.portable import portable_training_args
from peftplug.state import PeftState, peft_state
from peftplug.trl_support import subclass_kwargs


@dataclasses.dataclass
class PeftArguments(TrainingArguments):
    """``TrainingArguments`` plus the methods to apply; works with ``HfArgumentParser``.

    Only a Trainer built with ``**peftplug.trainer_kwargs()`` applies the methods; any other
    raises before its first optimizer step instead of training the whole model.
    """

    peft_plugins: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"help": "Methods to apply, in order (e.g. lora). `peftplug plugins` lists them."},
    )
    peft_config: dict | str | None = dataclasses.field(
        default=None,
        metadata={"help": 'Options per method as JSON, e.g. \'{"lora": {"r": 8}}\'.'},
    )

    # Set on the instance by PeftCallback.on_init_end: a Trainer built with trainer_kwargs().
    _callback_attached: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.peft_config, str):
            try:
                self.peft_config = json.loads(self.peft_config)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"--peft_config is not valid JSON ({error}); "
                    'write it like \'{"lora": {"r": 8}}\''
                ) from None
        self.peft_config = options_per_method(self.peft_config)
        if isinstance(self.peft_plugins, str):
            self.peft_plugins = [self.peft_plugins]
        if self.peft_plugins:
            resolve(self.peft_plugins, self.peft_config)  # fail now, not at the first step

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """The stock warmup; refuses first if no peftplug callback applied the methods.

        Of the args' methods, this is the first the stock Trainer calls only in ``train()``
        (after ``on_init_end``, after building the optimizer, before its first step), so it is
        where a Trainer built without ``trainer_kwargs()`` is stopped.
        """
        if self.peft_plugins and not self._callback_attached:
            raise PeftplugError(
                f"PeftArguments(peft_plugins={self.peft_plugins!r}) needs peftplug's callback and "
                "optimizer factory, which this Trainer lacks, so it would train the whole "
                "model: build it as Trainer(..., **peftplug.trainer_kwargs())"
            )
        return super().get_warmup_steps(num_training_steps)


@dataclasses.dataclass
class TrainerSession:
    """What the callback and the optimizer factory of one Trainer share."""

    args: TrainingArguments | None = None
    method_callbacks: list[TrainerCallback] = dataclasses.field(default_factory=list)

    def ensure_applied(self, model: nn.Module) -> PeftState:
        """Apply the methods named in the args unless the model already carries them."""
        plugins = list(getattr(self.args, "peft_plugins", None) or [])
        config = getattr(self.args, "peft_config", None) or {}
        state = peft_state(model)
        if state is None:
            if not plugins:
                raise PeftplugError(
                    "no methods to apply: pass peftplug.PeftArguments(peft_plugins=[...]) "
                    "as the Trainer's args, or call peftplug.apply(model, [...]) first"
                )
            apply(model, plugins, config)
            state = peft_state(model)
        elif plugins:
            applied = [m.spec.name for m in state.methods if m.adapter_name == state.active_adapter]
            if applied != plugins:
                raise PeftplugError(
                    f"the model already carries {applied} but the args ask for {plugins}: "
                    "pass a plain model, or drop peft_plugins from the args"
                )
        assert state is not None
        if not self.method_callbacks:
            for applied_method in state.methods:
                for callbacks in get_host().hook.peftplug_trainer_callbacks(
                    config=applied_method.config
                ):
                    self.method_callbacks.extend(callbacks or [])
        return state


class PeftCallback(TrainerCallback):
    """Applies the methods when the Trainer is built and relays events to method callbacks."""

    def __init__(self, session: TrainerSession) -> None:
        self.session = session

    def on_init_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        self.session.args = args
        if args.should_save:  # one process renames; the Trainer picks checkpoints in train()
            set_aside_interrupted(Path(args.output_dir))
        if isinstance(args, PeftArguments):
            args._callback_attached = True
        if model is not None:
            self.session.ensure_applied(model)
        return self._relay("on_init_end", args, state, control, model=model, **kwargs)

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if state.global_step > 0:  # resumed: the checkpoint just loaded must be intact
            for checkpoint in _resumed_checkpoints(args, state.global_step):
                verify_manifest(checkpoint, PeftplugError)
        if model is not None and _checkpointing(model):
            embeddings = model.get_input_embeddings()
            if embeddings is not None and not embeddings.weight.requires_grad:
                model.enable_input_require_grads()  # reentrant checkpointing needs grad inputs
        return self._relay("on_train_begin", args, state, control, model=model, **kwargs)

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if checkpoint.is_dir():
            portable_training_args(checkpoint, args)
            write_manifest(checkpoint)
        return self._relay("on_save", args, state, control, **kwargs)

    def _relay(self, event: str, args, state, control, **kwargs):  # noqa: ANN001
        for callback in self.session.method_callbacks:
            result = getattr(callback, event)(args, state, control, **kwargs)
            control = control if result is None else result
        return control


def _resumed_checkpoints(args: TrainingArguments, step: int) -> list[Path]:
    """The checkpoint a run resumed from at ``step``: in ``output_dir``, or as the args name it."""
    candidates = [Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"]
    if isinstance(args.resume_from_checkpoint, str):
        candidates.append(Path(args.resume_from_checkpoint))
    return [path for path in candidates if path.is_dir()]


def _checkpointing(model: nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on, under either transformers name."""
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def _relaying(event: str):  # noqa: ANN202
    def relay(self: PeftCallback, args, state, control, **kwargs):  # noqa: ANN001
        return self._relay(event, args, state, control, **kwargs)

    relay.__name__ = event
    return relay


for _event in [name for name in vars(TrainerCallback) if name.startswith("on_")]:
    if _event not in vars(PeftCallback):
        setattr(PeftCallback, _event, _relaying(_event))


class PeftOptimizerFactory:
    """Called by the stock Trainer with the model; builds ``args.optim`` over plugin groups.

    Also applies the methods to a model that ``model_init`` created after ``on_init_end``.
    """

    def __call__(self, model: nn.Module, *, session: TrainerSession) -> torch.optim.Optimizer:
        if session.args is None:
            raise PeftplugError(
                "peftplug's optimizer factory needs the callback from trainer_kwargs()"
            )
        session.ensure_applied(model)
        optimizer_class, options = Trainer.get_optimizer_cls_and_kwargs(session.args, model)
        if not isinstance(optimizer_class, type) or "params" in options or "model" in options:
            raise ConfigError(
                f"optim={session.args.optim!r} builds its own parameter groups, which peftplug "
                "cannot give it; choose an optimizer such as adamw_torch"
            )
        return optimizer_class(build_param_groups(model, session.args), **options)


def trainer_kwargs(
    trainer_class: type[Trainer] | None = None,
    *,
    model: nn.Module | None = None,
    args: TrainingArguments | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``transformers.Trainer``: the callback and the optimizer factory.

    Pass other callbacks alongside: ``callbacks=[*kw.pop("callbacks"), mine]``. For a Trainer
    subclass with its own ``__init__`` (TRL's), name it: ``trainer_kwargs(DPOTrainer,
    model=model, args=args)`` gives only keywords it takes (see ``peftplug.trl_support``).
    """
    session = TrainerSession(args=args)
    optimizer = (PeftOptimizerFactory, {"session": session})
    kwargs: dict[str, Any] = {"callbacks": [PeftCallback(session)]}
    if trainer_class is None:
        return kwargs | {"optimizer_cls_and_kwargs": optimizer}
    return kwargs | subclass_kwargs(trainer_class, optimizer, model, args)
