"""The plugin object of prefix tuning: the shared virtual-token hooks, bound to the method.

The entry point names ``PREFIX_TUNING`` itself; pluggy registers its hookimpl methods.
"""

from peftplug_prefix.method import PREFIX_TUNING

__all__ = ["PREFIX_TUNING"]
