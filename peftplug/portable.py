"""Saved files name models and paths portably: no home, cache, temp or site-packages path.

A base model is recorded as its Hub id, as ``package/relative`` for a file shipped inside an
installed package (``peftplug.data.locate.package_file`` finds it again), or as its directory's
name. Other paths are recorded relative to the directory a file is written into, or as names.
"""

from __future__ import annotations

import copy
import io
import json
import re
import site
import sysconfig
from pathlib import Path
from typing import Any

import torch

from peftplug.atomic import atomic_write_files
from peftplug.data.models import MARKER_NAME

HUB_CACHE_ENTRY = re.compile(r"^models--([^/]+)--([^/]+)$")
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"`()\[\]{},;:|<>*]+")
TRAINING_ARGS = "training_args.bin"  # the Trainer pickles its TrainingArguments here


def portable_base(name_or_path: str) -> tuple[str, str]:
    """The base model's portable name and its kind: ``hub``, ``package`` or ``directory``."""
    path = Path(name_or_path).expanduser()
    hub_id = _hub_id(path)
    if hub_id is not None:
        return hub_id, "hub"
    if not path.exists():
        if HUB_ID.match(name_or_path) and not name_or_path.startswith("."):
            return name_or_path, "hub"
        return path.name, "directory"
    path = path.resolve()
    converted = _converted_from(path)
    if converted is not None:
        return converted, "package"
    shipped = _in_package(path)
    if shipped is not None:
        return shipped, "package"
    return path.name, "directory"


def _hub_id(path: Path) -> str | None:
    """``org/name`` for a path inside a Hub cache's ``models--org--name/snapshots/<commit>``."""
    parts = path.parts
    for index, part in enumerate(parts[:-2]):
        match = HUB_CACHE_ENTRY.match(part)
        if match and parts[index + 1] == "snapshots":
            return f"{match[1]}/{match[2]}"
    return None


def _converted_from(directory: Path) -> str | None:
    """The shipped file a peftplug conversion (``peftplug.data.models``) was made from."""
    try:
        source = json.loads((directory / MARKER_NAME).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return source if isinstance(source, str) else None


def _site_directories() -> list[Path]:
    paths = {*site.getsitepackages(), site.getusersitepackages()}
    paths |= {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return [Path(p).resolve() for p in paths]


def _in_package(path: Path) -> str | None:
    """``package/relative`` for a path inside an installed package, else None."""
    for root in _site_directories():
        if path.is_relative_to(root) and path != root:
            return path.relative_to(root).as_posix()
    return None


def portable_path(path: str, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else its Hub id, package file or name."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(root.resolve()):
        return resolved.relative_to(root.resolve()).as_posix()
    hub_id = _hub_id(resolved)
    if hub_id is not None:
        return hub_id
    return _in_package(resolved) or resolved.name


def portable_text(text: str, root: Path) -> str:
    """``text`` with every absolute path in it made portable (``portable_path``)."""

    def replace(match: re.Match[str]) -> str:
        path = match[0].rstrip(".")  # a path ending a sentence
        return portable_path(path, root) + match[0][len(path) :]

    return ABSOLUTE_PATH.sub(replace, text)


def portable_json(value: Any, root: Path) -> Any:
    """A copy of a JSON value with every string made portable (``portable_text``)."""
    if isinstance(value, str):
        return portable_text(value, root)
    if isinstance(value, dict):
        return {key: portable_json(item, root) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable_json(item, root) for item in value]
    return value


def portable_training_args(checkpoint: Path, args: object) -> None:
    """Rewrite the checkpoint's pickled TrainingArguments with its path options made portable.

    The Trainer pickles its arguments (``output_dir`` and the like, absolute) into every
    checkpoint for reference; it never reads them back on resume. The live ``args`` are unchanged.
    """
    target = checkpoint / TRAINING_ARGS
    if not target.is_file():
        return
    portable = copy.copy(args)
    for name, value in vars(args).items():
        if isinstance(value, str) and Path(value).is_absolute():
            setattr(portable, name, portable_path(value, checkpoint.parent))
    buffer = io.BytesIO()
    torch.save(portable, buffer)
    atomic_write_files({target: buffer.getvalue()})
