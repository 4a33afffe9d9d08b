"""The shared base of virtual-token methods (prompt tuning, P-tuning, prefix tuning, yours).

A new method reuses, by module:

- ``config``: ``VirtualTokenConfig`` (``num_virtual_tokens``, ``init``, ``init_text``,
  ``tokenizer_name_or_path``, ``train_head``, validated) and ``EncodedVirtualTokenConfig``
  (adds ``encoder_hidden_size`` and ``folded`` for methods that train through an encoder);
- ``init``: starting tokens from sampled vocabulary rows, a text, or noise;
- ``store``: ``VirtualTokenStore``, the ``AdapterLayer`` holding each adapter's module;
- ``method``: ``VirtualTokenMethod``, adding and removing adapters and implementing the
  method-level hooks (the plugin module only binds them);
- ``fold``: ``fold_encoders``, replacing trained encoders by their output;
- ``peft_import``: ``prompt_learning_options``, the options shared by HF PEFT's prompt-learning
  configs, for a method's ``options_from_peft``.

With ``train_head`` the method asks for the task head through ``peftplug_modules_to_save``: the
core gives each adapter its own copy of it.
"""

from peftplug_prompt.virtual_tokens.config import EncodedVirtualTokenConfig, VirtualTokenConfig
from peftplug_prompt.virtual_tokens.fold import fold_encoders
from peftplug_prompt.virtual_tokens.init import (
    base_input_embedding,
    initial_virtual_tokens,
    text_token_ids,
)
from peftplug_prompt.virtual_tokens.method import VirtualTokenMethod
from peftplug_prompt.virtual_tokens.peft_import import prompt_learning_options
from peftplug_prompt.virtual_tokens.store import VirtualTokenStore

__all__ = [
    "EncodedVirtualTokenConfig",
    "VirtualTokenConfig",
    "VirtualTokenMethod",
    "VirtualTokenStore",
    "base_input_embedding",
    "fold_encoders",
    "initial_virtual_tokens",
    "prompt_learning_options",
    "text_token_ids",
]
