"""Test helper: which saved files hold a path of the machine that wrote them."""

from __future__ import annotations

import site
import tempfile
from collections.abc import Iterable
from pathlib import Path


def machine_paths(*extra: str | Path) -> list[str]:
    """The home, temp, site-packages and Hub cache directories, and ``extra`` ones."""
    from huggingface_hub import constants

    paths = [Path.home(), tempfile.gettempdir(), *site.getsitepackages(), *extra]
    paths += [site.getusersitepackages(), constants.HF_HOME, constants.HF_HUB_CACHE]
    return sorted({str(path) for path in paths})


def leaks(files: Iterable[Path], *extra: str | Path) -> list[str]:
    """``file: path`` for each file among ``files`` whose bytes hold a machine path."""
    paths = machine_paths(*extra)
    return [
        f"{file.name}: {path}"
        for file in files
        if file.is_file()
        for path in paths
        if path.encode() in file.read_bytes()
    ]
