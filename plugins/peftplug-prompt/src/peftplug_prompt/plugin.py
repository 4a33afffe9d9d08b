"""The plugin object of prompt tuning: the shared virtual-token hooks, bound to the method.

The entry point names ``PROMPT_TUNING`` itself; pluggy registers its hookimpl methods.
"""

from peftplug_prompt.method import PROMPT_TUNING

__all__ = ["PROMPT_TUNING"]
