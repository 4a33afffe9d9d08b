"""Exceptions that name the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PeftplugError(Exception):
    """Base class of every error peftplug raises on purpose."""


class PluginNotFoundError(PeftplugError, KeyError):
    """A method name that no installed plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginLoadError(PeftplugError):
    """A plugin failed to import or register (raised only with PEFTPLUG_STRICT_PLUGINS=1)."""


class PluginError(PeftplugError):
    """A plugin broke a hook's contract (a plugin bug); the model is left as it was."""


class ConfigError(PeftplugError, ValueError):
    """A method configuration that cannot be used as given."""


class TargetError(PeftplugError, ValueError):
    """Target modules that match nothing, or match modules a method cannot wrap."""


class AdapterLoadError(PeftplugError):
    """An adapter that cannot be loaded into this model; the model is left as it was."""


class AdapterSaveError(PeftplugError, OSError):
    """An adapter that could not be saved; the directory keeps a complete adapter (or none)."""


class NotMergeableError(PeftplugError):
    """A method whose update cannot be folded into the base weights."""


def close_matches(word: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """The candidates that look most like `word` (for 'did you mean' hints)."""
    return difflib.get_close_matches(word, sorted(set(candidates)), n=limit, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean ...?)' suffix, or '' when nothing is close.

    Close spellings first; else the longest candidate ``word`` starts with, since a short name
    is never a close spelling of a longer word (``rnak`` for LoRA's ``r``).
    """
    candidates = sorted(set(candidates))
    starts = sorted((c for c in candidates if c and word.startswith(c)), key=len)
    matches = close_matches(word, candidates) or starts[-1:]
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"
