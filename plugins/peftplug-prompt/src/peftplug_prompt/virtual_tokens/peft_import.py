"""Virtual-token options from HF PEFT's prompt-learning configs, for ``peftplug.import_peft``."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from peftplug import ConfigError
from peftplug.import_peft import PEFT_METADATA_FIELDS, refuse_peft_fields
from peftplug.targets import TASK_HEAD_ATTRIBUTES

# fields every PEFT prompt-learning config has that the import reads or that follow the model
PROMPT_LEARNING_FIELDS = PEFT_METADATA_FIELDS | {
    "num_virtual_tokens",
    "token_dim",
    "num_attention_heads",
    "num_layers",
    "num_transformer_submodules",
    "modules_to_save",
}


def prompt_learning_options(
    peft_config: Mapping[str, Any], method: str, fields: Collection[str]
) -> dict[str, Any]:
    """``num_virtual_tokens`` and ``train_head`` for PEFT's prompt-learning ``peft_config``.

    ``fields``: the method's own PEFT fields that the caller reads or that have no effect on
    the saved tokens; any other set field is refused, and so are an encoder-decoder's two
    prompts and a ``modules_to_save`` beyond the task head (all that ``train_head`` trains).
    """
    refuse_peft_fields(peft_config, PROMPT_LEARNING_FIELDS | set(fields), method)
    if peft_config.get("num_transformer_submodules") not in (None, 1):
        raise ConfigError(
            f"the HF PEFT adapter holds {peft_config['num_transformer_submodules']} prompts, one "
            f"per transformer stack of an encoder-decoder; peftplug's {method!r} prompts the "
            "input embeddings once"
        )
    others = sorted(set(peft_config["modules_to_save"]) - set(TASK_HEAD_ATTRIBUTES))
    if others:
        raise ConfigError(
            f"the HF PEFT adapter trains {others[0]!r} in full (modules_to_save); peftplug's "
            f"{method!r} trains only the task head beside its tokens (train_head)"
        )
    return {
        "num_virtual_tokens": peft_config.get("num_virtual_tokens"),
        "train_head": bool(peft_config["modules_to_save"]),
    }
