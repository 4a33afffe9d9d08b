"""Custom ops and the compiled extension's status.

The op schemas and their pure-PyTorch references are defined first (``peftplug.ops.nf4``);
then the compiled module ``peftplug._C`` is loaded inside a guard that records why it failed.
When it loads, its C++ kernels take over the devices they are registered for; every other
case runs the reference. ``PEFTPLUG_USE_EXT=0`` leaves a built extension unloaded (to compare
against the references, or to rule the kernels out).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from peftplug.ops.nf4 import nf4_dequantize, nf4_lora_linear
from peftplug.ops.prefix_attention import attend_with_prefix as attend_with_prefix

_extension: Any = None
_load_error: str | None = None


def _load_extension() -> None:
    global _extension, _load_error
    if os.environ.get("PEFTPLUG_USE_EXT", "1") == "0":
        _load_error = "switched off by PEFTPLUG_USE_EXT=0"
        return
    try:
        _extension = importlib.import_module("peftplug._C")
    except ImportError as error:
        _load_error = (
            f"not built or not importable ({error}); build it with "
            "`pip install --no-build-isolation -e .` (PEFTPLUG_BUILD_EXT=1, the default)"
        )
    except (OSError, RuntimeError) as error:  # ABI mismatch, undefined symbol, bad registration
        _load_error = (
            f"{type(error).__name__}: {error}; rebuild it against this torch with "
            "`pip install --no-build-isolation -e .`"
        )


_load_extension()


def extension_status() -> dict[str, Any]:
    """Whether the compiled extension loaded, why not, and which kernels it has."""
    if _extension is None:
        return {
            "loaded": False,
            "reason": _load_error,
            "kernels": [],
            "note": "the pure-PyTorch reference ops run",
        }
    return {"loaded": True, **_extension.build_info()}


__all__ = ["extension_status", "nf4_dequantize", "nf4_lora_linear"]
