"""QLoRA for peftplug: the base linear layers frozen in NF4, LoRA trained on top."""

from peftplug_qlora.config import QLoraConfig
from peftplug_qlora.layer import QLoraLinear
from peftplug_qlora.merge import merge_requantized, merge_to_float
from peftplug_qlora.quantize_model import weight_memory

__all__ = ["QLoraConfig", "QLoraLinear", "merge_requantized", "merge_to_float", "weight_memory"]
