"""A SHA-256 manifest for each Trainer checkpoint, written on save and verified on resume.

The stock Trainer verifies nothing: a flipped byte, a NaN written into ``model.safetensors`` or
a tensor removed from it resumes silently. peftplug's callback writes
``peftplug_checkpoint.json`` (every file's SHA-256) after the Trainer saves a checkpoint, and
checks it before the first step of a resumed run and when ``load_adapter`` reads a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from peftplug.atomic import atomic_write_files
from peftplug.errors import PeftplugError

MANIFEST = "peftplug_checkpoint.json"
FORMAT = "peftplug-checkpoint"


def _digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> None:
    """Record the SHA-256 of every file in the checkpoint ``directory``."""
    files = {str(p.relative_to(directory)): _digest(p) for p in _files(directory)}
    record = {"format": FORMAT, "files": files}
    atomic_write_files({directory / MANIFEST: (json.dumps(record, indent=2) + "\n").encode()})


def verify_manifest(directory: Path, error: type[PeftplugError]) -> None:
    """Raise ``error`` naming the first file that is missing or differs from the manifest.

    A checkpoint without a manifest (written without peftplug's callback) is not checked.
    """
    path = directory / MANIFEST
    if not path.is_file():
        return
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise error(f"{path} is damaged: resume from an earlier checkpoint") from None
    for name, digest in files.items():
        file = directory / name
        if not file.is_file() or _digest(file) != digest:
            raise error(
                f"checkpoint file {file} is missing or differs from {MANIFEST} (damaged or "
                "edited after it was saved): resume from an earlier checkpoint"
            )
