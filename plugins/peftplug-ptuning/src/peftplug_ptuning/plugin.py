"""The plugin object of P-tuning: the shared virtual-token hooks, bound to the method.

The entry point names ``P_TUNING`` itself; pluggy registers its hookimpl methods.
"""

from peftplug_ptuning.method import P_TUNING

__all__ = ["P_TUNING"]
