"""Prefix tuning for peftplug: learned keys and values before every attention layer's keys."""

from peftplug_prefix.attention import IMPLEMENTATION, prefix_attention_forward
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.fold import fold
from peftplug_prefix.layer import PrefixEncoder, PrefixKeyValues, PrefixStore
from peftplug_prefix.method import PREFIX_TUNING, PrefixTuning, prefix_store

__all__ = [
    "IMPLEMENTATION",
    "PREFIX_TUNING",
    "PrefixConfig",
    "PrefixEncoder",
    "PrefixKeyValues",
    "PrefixStore",
    "PrefixTuning",
    "fold",
    "prefix_attention_forward",
    "prefix_store",
]
