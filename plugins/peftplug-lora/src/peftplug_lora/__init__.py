"""LoRA for peftplug: low-rank updates added to linear layers, and variants of it (DoRA)."""

from peftplug_lora.config import LoraConfig
from peftplug_lora.dora import DoraVariant
from peftplug_lora.layer import LoraLinear
from peftplug_lora.variant import LoraVariant

__all__ = ["DoraVariant", "LoraConfig", "LoraLinear", "LoraVariant"]
