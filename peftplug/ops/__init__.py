"""Custom ops and the compiled extension's status.

The compiled module ``peftplug._C`` is optional: it is loaded inside a guard that records
why it failed, and every op has a pure-PyTorch reference that runs without it.
"""

from __future__ import annotations

import importlib
from typing import Any

_extension: Any = None
_load_error: str | None = None


def _load_extension() -> None:
    global _extension, _load_error
    try:
        _extension = importlib.import_module("peftplug._C")
    except ImportError as error:
        _load_error = f"{error}"


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
