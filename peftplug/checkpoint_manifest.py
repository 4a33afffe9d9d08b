"""A SHA-256 manifest for each Trainer checkpoint, written on save and verified on resume.

The stock Trainer verifies nothing: a flipped byte, a NaN written into ``model.safetensors`` or
a tensor removed from it resumes silently. peftplug's callback writes
``peftplug_checkpoint.json`` (every file's SHA-256) after the Trainer saves a checkpoint, and
checks it before the first step of a resumed run and when ``load_adapter`` reads a checkpoint.
A checkpoint whose save was cut off is set aside when the next Trainer is built, so that
``resume_from_checkpoint=True`` resumes from the last complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from peftplug.atomic import atomic_write_files
from peftplug.errors import PeftplugError

MANIFEST = "peftplug_checkpoint.json"
FORMAT = "peftplug-checkpoint"
TRAINER_STATE = "trainer_state.json"  # the stock Trainer writes it last in a checkpoint
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SET_ASIDE_PREFIX = "incomplete-"  # no longer matches CHECKPOINT, so the Trainer skips it

log = logging.getLogger("peftplug")


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


def set_aside_interrupted(output_dir: Path) -> list[Path]:
    """Rename the newest checkpoints whose save was cut off; returns their new paths.

    Cut off means no ``trainer_state.json`` (the Trainer's last file), or no manifest where an
    older checkpoint in ``output_dir`` has one (our callback writes it right after the
    Trainer). Each goes to ``incomplete-checkpoint-N`` (kept for inspection), newest first,
    until a complete one is found: that is the one ``resume_from_checkpoint=True`` then takes.
    """
    steps = sorted(
        (int(m[1]), path)
        for path in (output_dir.iterdir() if output_dir.is_dir() else [])
        if path.is_dir() and (m := CHECKPOINT.match(path.name))
    )
    with_manifest = [step for step, path in steps if (path / MANIFEST).is_file()]
    moved = []
    for step, path in reversed(steps):
        reason = _cut_off(path, manifest_expected=any(s < step for s in with_manifest))
        if reason is None:
            break
        target = _free_name(output_dir / f"{SET_ASIDE_PREFIX}{path.name}")
        path.rename(target)
        moved.append(target)
        log.warning(
            "peftplug: %s was cut off while saving (%s); moved to %s, so that "
            "resume_from_checkpoint=True resumes from the last complete checkpoint",
            path,
            reason,
            target.name,
        )
    return moved


def _cut_off(checkpoint: Path, manifest_expected: bool) -> str | None:
    if not (checkpoint / TRAINER_STATE).is_file():
        return f"it has no {TRAINER_STATE}"
    if manifest_expected and not (checkpoint / MANIFEST).is_file():
        return f"it has no {MANIFEST}, which the earlier checkpoints have"
    return None


def _free_name(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate
