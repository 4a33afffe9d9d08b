"""``peftplug merge`` and ``peftplug export``: finished adapters as merged models or copies."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

import peftplug
from peftplug.commands.arguments import EXPORT_FORMATS
from peftplug.commands.export_inputs import base_model_for, refuse_non_empty
from peftplug.errors import ConfigError
from peftplug.model_card import CARD_NAME
from peftplug.serialization import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter, write_adapter


def _replace_directory(source: Path, target: Path) -> None:
    """Move a finished directory into place (over an empty one, never a non-empty one)."""
    if refuse_non_empty(target).exists():
        target.rmdir()
    os.replace(source, target)


def merge_to_directory(
    adapter: str | Path, out: str | Path, model: str | None = None, task: str | None = None
) -> Path:
    """Load the adapter into its base, fold it into the weights, save a plain model (+ tokenizer).

    Written into a temporary directory beside ``out`` and renamed when complete.
    """
    out = refuse_non_empty(Path(out))
    base, path = base_model_for(adapter, model, task)
    merged = peftplug.unload(peftplug.load_adapter(base, adapter), merge=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        merged.save_pretrained(temporary)
        try:
            AutoTokenizer.from_pretrained(path).save_pretrained(temporary)
        except (OSError, ValueError):
            pass  # a base without a tokenizer: the merged model is still complete
        _replace_directory(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out


def copy_adapter(adapter: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Verify the adapter (checksum, manifest), commit its two files to ``out`` as one unit, and
    copy its model card."""
    source, out = Path(adapter), refuse_non_empty(Path(out), overwrite)
    config, _ = read_adapter(adapter)  # says what a directory without an adapter lacks
    if not (source / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"{adapter} is a Trainer checkpoint; load it and save it with peftplug.save_adapter "
            "first, or export it with --format merged"
        )
    card = source / CARD_NAME
    extra = {CARD_NAME: card.read_bytes()} if card.is_file() else {}
    write_adapter(out, (source / ADAPTER_WEIGHTS).read_bytes(), config, extra)
    return out


def export(
    adapter: str | Path,
    out: str | Path,
    fmt: str,
    model: str | None = None,
    task: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the adapter (``peftplug``), HF PEFT's layout (``peft``, for methods with a PEFT
    equivalent: ``peftplug.export_peft``) or the merged model (``merged``) to ``out``."""
    if fmt == "merged":
        return merge_to_directory(adapter, out, model, task)
    if fmt == "peftplug":
        return copy_adapter(adapter, out, overwrite)
    if fmt == "peft":
        out = refuse_non_empty(Path(out), overwrite)
        base, _ = base_model_for(adapter, model, task)
        return peftplug.export_peft(peftplug.load_adapter(base, adapter), out)
    raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
