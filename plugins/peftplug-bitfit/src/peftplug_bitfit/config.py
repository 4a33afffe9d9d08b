"""BitFit's options."""

from __future__ import annotations

import dataclasses
import re

from peftplug import ConfigError, MethodConfig


@dataclasses.dataclass
class BitFitConfig(MethodConfig):
    """BitFit (Ben Zaken et al., 2021): train the model's own bias terms in place; add nothing.

    ``target_modules``: whose biases train. ``None`` trains every bias. A list of module names
    selects the biases of each module whose dotted path is or ends with a name, and of the
    modules inside it (``["query", "value", "intermediate.dense"]`` is the paper's reduced
    variant). A string is a regular expression matched against whole module paths.
    ``train_head``: also train the task head of a classification or QA model in full.
    ``train_norms``: also train every LayerNorm/RMSNorm (weights and biases); models without
    biases (Llama and most recent decoders) need it.
    """

    target_modules: list[str] | str | None = None
    train_head: bool = True
    train_norms: bool = False

    def validate(self) -> None:
        targets = self.target_modules
        if isinstance(targets, list) and not (targets and all(targets)):
            raise ConfigError(
                f"bitfit option 'target_modules' must name at least one module and no empty "
                f"names, got {targets!r}; leave it None to train every bias"
            )
        if isinstance(targets, str):
            try:
                re.compile(targets)
            except re.error as error:
                raise ConfigError(
                    f"bitfit option 'target_modules' {targets!r} is not a valid regular "
                    f"expression ({error}); pass a list of module names instead"
                ) from None
