"""Prefix tuning for peftplug: learned keys and values before every attention layer's keys."""

from peftplug_prefix.attention import IMPLEMENTATION, prefix_attention_forward
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.fold import fold
from peftplug_prefix.layer import PrefixEncoder, PrefixKeyValues, PrefixStore
from peftplug_prefix.mechanism import prefix_store

__all__ = [
    "IMPLEMENTATION",
    "PrefixConfig",
    "PrefixEncoder",
    "PrefixKeyValues",
    "PrefixStore",
    "fold",
    "prefix_attention_forward",
    "prefix_store",
]
