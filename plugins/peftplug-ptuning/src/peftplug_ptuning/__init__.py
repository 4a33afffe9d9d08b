"""P-tuning for peftplug: virtual tokens produced by a prompt encoder, folded for inference."""

from peftplug_ptuning.config import PTuningConfig
from peftplug_ptuning.encoder import PromptEncoder
from peftplug_ptuning.fold import fold
from peftplug_ptuning.method import P_TUNING, PTuning

__all__ = ["P_TUNING", "PTuning", "PTuningConfig", "PromptEncoder", "fold"]
