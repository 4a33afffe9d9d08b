"""LoRA for peftplug: low-rank updates added to linear layers."""

from peftplug_lora.config import LoraConfig
from peftplug_lora.layer import LoraLinear

__all__ = ["LoraConfig", "LoraLinear"]
