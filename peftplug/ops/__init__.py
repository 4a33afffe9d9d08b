"""Custom ops and the compiled extension's status.

The op schemas and their pure-PyTorch references are defined first (``peftplug.ops.nf4``);
then the compiled module ``peftplug._C`` is loaded inside a guard that records why it failed.
When it loads, its C++ kernels take over the devices they are registered for; every other
case runs the reference. ``PEFTPLUG_USE_EXT=0`` leaves a built extension unloaded (to compare
against the references, or to rule the kernels out).

The CPU kernels are compiled for several instruction sets and take the best one this CPU runs;
``PEFTPLUG_CPU_CAPABILITY=default|avx2|avx512`` forces one (an unknown or unrunnable choice is an
error at import), and ``cpu_capability(name)`` forces one inside a ``with`` block.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Any

from peftplug.errors import PeftplugError

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


class CpuCapabilityError(PeftplugError, ValueError):
    """An instruction set for the CPU kernels that this build lacks or this CPU cannot run."""


def _check_forced_capability() -> None:
    """Surface a bad PEFTPLUG_CPU_CAPABILITY now, not at the first kernel call."""
    if _extension is None:
        return
    try:
        _extension.cpu_capabilities()
    except ValueError as error:
        raise CpuCapabilityError(str(error)) from None


_load_extension()
_check_forced_capability()


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


@contextlib.contextmanager
def cpu_capability(name: str) -> Iterator[None]:
    """Run the compiled CPU kernels with instruction set ``name`` inside the block.

    ``name`` is one of ``extension_status()["cpu_capabilities"]["supported"]``; on leaving, the
    choice goes back to ``PEFTPLUG_CPU_CAPABILITY`` or the best the CPU runs.
    """
    if _extension is None:
        raise CpuCapabilityError(f"no compiled CPU kernels to choose for: the extension is {_load_error}")
    try:
        _extension.set_cpu_capability(name)
    except ValueError as error:
        raise CpuCapabilityError(str(error)) from None
    try:
        yield
    finally:
        _extension.set_cpu_capability(None)


__all__ = ["CpuCapabilityError", "cpu_capability", "extension_status", "nf4_dequantize", "nf4_lora_linear"]
