"""Keywords for Trainer subclasses with their own ``__init__`` (TRL's trainers), no subclassing.

Nothing here imports TRL: the trainer class's signature says which keywords it takes.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments

from peftplug.apply import disable_adapters
from peftplug.errors import PeftplugError


class AdaptersDisabled(nn.Module):
    """The policy with every adapter bypassed: a reference model with no weights of its own.

    Given as a trainer's ``ref_model`` (DPO's), it makes the trainer load no second model; its
    parameters are the policy's, so nothing is copied.
    """

    def __init__(self, policy: PreTrainedModel) -> None:
        super().__init__()
        self.policy = policy

    @property
    def config(self) -> Any:
        """The policy's config (TRL reads it to build its fused LM head)."""
        return self.policy.config

    @property
    def base_model(self) -> functools.partial:
        """The policy's backbone, run with adapters bypassed (TRL's fused LM head calls it)."""
        return functools.partial(self._bypassed, self.policy.base_model)

    def get_output_embeddings(self) -> nn.Module:
        """The policy's LM head."""
        return self.policy.get_output_embeddings()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._bypassed(self.policy, *args, **kwargs)

    def _bypassed(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with disable_adapters(self.policy):
            return module(*args, **kwargs)


def subclass_kwargs(
    trainer_class: type[Trainer],
    optimizer: tuple[type, dict[str, Any]],
    model: PreTrainedModel | None,
    args: TrainingArguments | None,
) -> dict[str, Any]:
    """The keywords ``trainer_kwargs(trainer_class, ...)`` adds to the callback.

    ``optimizer`` is peftplug's ``optimizer_cls_and_kwargs``. A class that does not take that
    keyword gets the optimizer built now, over ``model`` (the methods are applied first), as
    ``optimizers``; a class that takes a ``ref_model`` gets ``AdaptersDisabled(model)``.
    """
    accepted = inspect.signature(trainer_class.__init__).parameters
    if "callbacks" not in accepted:
        raise PeftplugError(
            f"{trainer_class.__name__} takes no callbacks, so peftplug cannot hook it"
        )
    needs_model = "optimizer_cls_and_kwargs" not in accepted or "ref_model" in accepted
    if needs_model and (model is None or args is None):
        raise PeftplugError(
            f"{trainer_class.__name__} takes no optimizer_cls_and_kwargs or takes a ref_model, "
            "which peftplug builds from the model now: call "
            f"peftplug.trainer_kwargs({trainer_class.__name__}, model=model, args=args)"
        )
    kwargs: dict[str, Any] = {}
    if "optimizer_cls_and_kwargs" in accepted:
        kwargs["optimizer_cls_and_kwargs"] = optimizer
    else:
        factory, options = optimizer
        kwargs["optimizers"] = (factory()(model, **options), None)  # as the Trainer calls it
    if "ref_model" in accepted:
        kwargs["ref_model"] = AdaptersDisabled(model)
    return kwargs
