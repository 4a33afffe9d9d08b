"""BitFit for peftplug: train only the model's bias terms (and optionally its norms)."""

from peftplug_bitfit.config import BitFitConfig
from peftplug_bitfit.selection import select_parameters

__all__ = ["BitFitConfig", "select_parameters"]
