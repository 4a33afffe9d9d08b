"""The key/value cache among a forward's keyword arguments, whatever transformers calls it.

transformers 5.24 renamed the forward keyword ``past_key_values`` to ``cache`` (models and
``generate`` use the new name; models still accept the old one). Methods that look at the cache
read it here, so both releases and callers still passing the old name work.
"""

from __future__ import annotations

from typing import Any

CACHE_KEYS = ("cache", "past_key_values")


def kv_cache(inputs: dict[str, Any]) -> Any:
    """The KV cache among a forward's ``inputs``, under either of its names, or ``None``."""
    for key in CACHE_KEYS:
        if inputs.get(key) is not None:
            return inputs[key]
    return None
