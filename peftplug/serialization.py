"""Reading adapter files strictly (``load_adapter``); ``peftplug.adapter_save`` writes them.

Also reads Trainer checkpoints: since format version 2 they hold the adapter files; before,
the methods were recorded in their ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from peftplug.adapter_save import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    base_model_record,
    config_digest,
    dtype_name,
    finish_interrupted_save,
    method_tensors,
    refuse_non_finite,
    save_adapter,
    write_adapter,
)
from peftplug.apply import CONFIG_RECORD, apply
from peftplug.atomic import directory_lock
from peftplug.base_fingerprint import check_same_base
from peftplug.checkpoint_manifest import verify_manifest
from peftplug.errors import AdapterLoadError, PeftplugError
from peftplug.hub import is_repo_id, snapshot
from peftplug.model_card import CARD_NAME
from peftplug.peft_layout import load_computed, peft_adapter, saved_name
from peftplug.plugins import get_host
from peftplug.pretrained import TRAINER_CONFIG
from peftplug.rollback import rollback_on_error
from peftplug.sharded import copy_into
from peftplug.state import AppliedMethod, PeftState, peft_state, require_state

TRAINER_WEIGHTS = "model.safetensors"  # a checkpoint before format version 2
READABLE_VERSIONS = (1, FORMAT_VERSION)

__all__ = [  # the writing side, kept importable from here
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "FORMAT",
    "config_digest",
    "load_adapter",
    "method_tensors",
    "read_adapter",
    "refuse_meta_weights",
    "refuse_non_finite",
    "save_adapter",
    "write_adapter",
]


def read_adapter(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A saved adapter's or Trainer checkpoint's description and tensors (by state-dict name).

    Verified: checksums, manifests, format version. First completes or discards what a killed
    ``save_adapter`` left there, under the lock a save holds, so a load never sees half a save.
    A ``user/repo`` that is not a local directory is a Hub id, read from huggingface_hub's cache
    (downloaded first unless offline).
    """
    if is_repo_id(directory) and not Path(directory).is_dir():
        directory = snapshot(str(directory), [ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD_NAME])
    directory = Path(directory)
    if not directory.is_dir():
        return _read_files(directory)
    with directory_lock(directory):
        finish_interrupted_save(directory)
        return _read_files(directory)


def _read_files(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if (directory / ADAPTER_CONFIG).is_file():
        verify_manifest(directory, AdapterLoadError)  # a Trainer checkpoint's, where there is one
        config = _read_json(directory / ADAPTER_CONFIG)
        _check_format(config, directory / ADAPTER_CONFIG)
        if config.get("config_sha256") != config_digest(config):
            raise AdapterLoadError(
                f"{directory / ADAPTER_CONFIG} was changed after it was saved (its checksum "
                "differs): a hand-edited option would change the adapter's outputs; save the "
                "adapter again from the model"
            )
        data = _read_bytes(directory / ADAPTER_WEIGHTS)
        if hashlib.sha256(data).hexdigest() != config.get("weights_sha256"):
            raise AdapterLoadError(
                f"{directory / ADAPTER_WEIGHTS} does not match {ADAPTER_CONFIG} (checksum "
                "differs): the file is corrupted or truncated; save the adapter again"
            )
        tensors = _parse_safetensors(data, directory / ADAPTER_WEIGHTS)
        _check_manifest(config.get("tensors", {}), tensors, directory)
        return config, _by_live_name(config.get("tensors", {}), tensors, directory)
    if (directory / TRAINER_CONFIG).is_file():
        record = _read_json(directory / TRAINER_CONFIG).get(CONFIG_RECORD)
        if record is not None:
            verify_manifest(directory, AdapterLoadError)
            tensors = _parse_safetensors(
                _read_bytes(directory / TRAINER_WEIGHTS), directory / TRAINER_WEIGHTS
            )
            return {"format_version": 1, "methods": record["methods"], "base_model": {}}, tensors
    raise AdapterLoadError(
        f"no adapter in {directory}: expected {ADAPTER_CONFIG} (written by peftplug.save_adapter) "
        f"or a Trainer checkpoint whose {TRAINER_CONFIG} has a {CONFIG_RECORD!r} entry"
    )


def _check_format(config: dict[str, Any], path: Path) -> None:
    """Refuse what is not a peftplug adapter this version reads, saying what it is instead."""
    fmt, version = config.get("format"), config.get("format_version")
    if fmt != FORMAT and isinstance(config.get("peft_type"), str):
        raise AdapterLoadError(
            f"{path} is an HF PEFT adapter (peft_type {config['peft_type']!r}), not a peftplug "
            "one: import it with peftplug.import_peft(model, directory), or load it with "
            "peft.PeftModel.from_pretrained"
        )
    if fmt != FORMAT:
        raise AdapterLoadError(
            f"{path} is not a peftplug adapter (format {fmt!r}, expected {FORMAT!r}): point "
            "load_adapter at a directory written by peftplug.save_adapter"
        )
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise AdapterLoadError(
            f"{path} has format version {version}, newer than this peftplug reads "
            f"({FORMAT_VERSION}): upgrade peftplug"
        )
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise AdapterLoadError(
            f"{path} has an invalid format_version {version!r} (expected one of "
            f"{READABLE_VERSIONS}): the file was edited or damaged; save the adapter again"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterLoadError(f"cannot read {path}: {error}; the file is corrupted") from None
    if not isinstance(value, dict):
        raise AdapterLoadError(f"{path} does not hold a JSON object; the file is corrupted")
    return value


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise AdapterLoadError(f"cannot read {path}: {error}") from None


def _parse_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as error:  # safetensors raises its own error types
        raise AdapterLoadError(
            f"{path} is not a valid safetensors file ({error}): corrupted or truncated"
        ) from None


def _check_manifest(
    manifest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], directory: Path
) -> None:
    for key, entry in manifest.items():
        tensor = tensors.get(key)
        if (
            tensor is None
            or list(tensor.shape) != entry["shape"]
            or dtype_name(tensor) != entry["dtype"]
        ):
            raise AdapterLoadError(
                f"{directory}: tensor {key!r} does not match the manifest in {ADAPTER_CONFIG}; "
                "the adapter files are inconsistent: save the adapter again"
            )
    extra = sorted(set(tensors) - set(manifest))
    if extra:
        raise AdapterLoadError(f"{directory}: tensors not in the manifest: {', '.join(extra[:5])}")


def _by_live_name(
    manifest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], directory: Path
) -> dict[str, torch.Tensor]:
    """The tensors by ``model.state_dict()`` name, the manifest's ``name`` of each (version 2).

    A value PEFT reads that peftplug computes from its own tensors (``name`` null) keeps its
    name in the file (PEFT's, which no live tensor has): ``load_adapter`` rebuilds the live
    tensors from it where the method's equivalent can (``load``), and ignores it otherwise.
    """
    live: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = manifest[key].get("name", key)
        if name is None:
            live[key] = tensor
            continue
        if not isinstance(name, str) or name in live:
            raise AdapterLoadError(
                f"{directory}: the manifest in {ADAPTER_CONFIG} gives tensor {key!r} the name "
                f"{name!r}, which is not a single tensor's name: save the adapter again"
            )
        live[name] = tensor
    return live


def load_adapter(
    model: nn.Module,
    directory: str | Path,
    *,
    allow_non_finite: bool = False,
    allow_base_mismatch: bool = False,
) -> nn.Module:
    """Apply the saved methods to ``model`` and load their tensors strictly.

    Reads a ``save_adapter`` directory, a Trainer checkpoint directory, or a Hub id
    (``user/repo``, see ``read_adapter``). A tensor holding NaN or Inf is refused unless
    ``allow_non_finite``; a base whose weights differ from the one the adapter was trained on
    (its recorded fingerprint) unless ``allow_base_mismatch``. On any error the model is left
    exactly as it was. A model sharded by FSDP2: call it on every rank; each copies its part of
    each saved tensor into its shard (see ``peftplug.sharded``).
    """
    refuse_meta_weights(model)
    description, tensors = read_adapter(directory)
    if not allow_non_finite:
        refuse_non_finite(tensors, AdapterLoadError, "load it anyway with allow_non_finite=True")
    by_adapter: dict[str, list[dict[str, Any]]] = {}
    for record in description["methods"]:
        _require_installed(record)
        by_adapter.setdefault(record["adapter_name"], []).append(record)
    existing = peft_state(model)
    clash = sorted(set(by_adapter) & set(existing.adapter_names if existing else []))
    if clash:
        raise AdapterLoadError(
            f"the model already has adapter(s) {', '.join(clash)}: peftplug.unload(model) or "
            "delete_adapter(model, name) first"
        )
    try:
        with rollback_on_error(model):
            for adapter_name, records in by_adapter.items():
                apply(
                    model,
                    [r["method"] for r in records],
                    {r["method"]: r["config"] for r in records},
                    adapter_name=adapter_name,
                )
            state = require_state(model)
            expected = {
                k: t for name in by_adapter for k, t in method_tensors(model, state, name).items()
            }
            loads = _computed_loads(model, state, description, tensors)
            rebuilt = {
                key
                for applied, _ in loads
                for key in method_tensors(model, state, applied.adapter_name)
            }
            expected = {k: t for k, t in expected.items() if k in tensors or k not in rebuilt}
            _check_fits(expected, tensors, description.get("base_model", {}), model)
            if not allow_base_mismatch:  # after the shapes: another architecture says so first
                check_same_base(description.get("base_model", {}), model)
            with torch.no_grad():  # into the new adapters' own tensors: a failure undoes them
                for applied, values in loads:
                    load_computed(model, applied, values)
    except AdapterLoadError:
        raise
    except Exception as error:
        reason = (
            str(error) if isinstance(error, PeftplugError) else f"{type(error).__name__}: {error}"
        )
        raise AdapterLoadError(
            f"adapter in {directory} does not fit this model: {reason}"
            f"{_made_for(description.get('base_model', {}), model)}"
        ) from error
    with torch.no_grad():
        for key, tensor in expected.items():
            copy_into(tensor, tensors[key])
    return model


def _computed_loads(
    model: nn.Module,
    state: PeftState,
    description: Mapping[str, Any],
    tensors: dict[str, torch.Tensor],
) -> list[tuple[AppliedMethod, dict[str, torch.Tensor]]]:
    """Take PEFT's computed values (manifest ``name`` null) out of ``tensors``; for each method
    whose equivalent rebuilds its live tensors from them (``load``), the values by PEFT name."""
    manifest = description.get("tensors", {})
    computed = {
        k: tensors.pop(k) for k in list(tensors) if manifest.get(k, {}).get("name", k) is None
    }
    loads = []
    for applied in state.methods:
        adapter = peft_adapter(model, applied) if computed else None
        if adapter is None or adapter.load is None:
            continue
        names = {saved_name(name): name for name in adapter.computed}
        missing = sorted(set(names) - set(computed))
        if missing:
            raise AdapterLoadError(f"the adapter file lacks PEFT's {missing[0]!r}")
        loads.append((applied, {names[key]: computed[key] for key in names}))
    return loads


def refuse_meta_weights(model: nn.Module) -> None:
    """A model built without weights would take the adapter's shapes and drop its values."""
    meta = next(
        (n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None
    )
    if meta is not None:
        raise AdapterLoadError(
            f"the model's weights are on the meta device ({meta} and maybe more): it was built "
            "without loading them (init_empty_weights, device_map='meta' or disk offload), so "
            "the adapter's values would be dropped; load the base weights first (from_pretrained "
            "onto cpu or a GPU), then load the adapter"
        )


def _require_installed(record: Mapping[str, Any]) -> None:
    host = get_host()
    if record["method"] in host.methods:
        return
    reason = host.unavailable_reason(record["method"])
    if reason is not None:
        raise AdapterLoadError(f"this adapter needs method {record['method']!r}: {reason}")
    distribution = record.get("distribution") or f"peftplug-{record['method']}"
    raise AdapterLoadError(
        f"this adapter needs method {record['method']!r} from {distribution} "
        f"{record.get('version', '')}, which is not installed: pip install {distribution}"
    )


def _check_fits(
    expected: Mapping[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
    base_model: Mapping[str, Any],
    model: nn.Module,
) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(
            f"missing tensors: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected tensors: {', '.join(unexpected[:5])}"
            + (" ..." if len(unexpected) > 5 else "")
        )
    for key in sorted(set(expected) & set(tensors)):
        if expected[key].shape != tensors[key].shape:
            problems.append(
                f"{key} has shape {list(tensors[key].shape)} in the adapter but "
                f"{list(expected[key].shape)} in this model"
            )
            break
        if not (expected[key].is_floating_point() and tensors[key].is_floating_point()) and (
            expected[key].dtype != tensors[key].dtype
        ):
            problems.append(
                f"{key} is {tensors[key].dtype} in the adapter but {expected[key].dtype} here"
            )
            break
    if problems:
        raise AdapterLoadError(
            "adapter does not fit this model: " + "; ".join(problems) + _made_for(base_model, model)
        )


def _made_for(base_model: Mapping[str, Any], model: nn.Module) -> str:
    if not base_model.get("name_or_path"):
        return ""
    here = base_model_record(model)
    return (
        f" (the adapter was made for {base_model['name_or_path']!r}, model_type "
        f"{base_model.get('model_type')!r}; this model is {here['name_or_path']!r}, model_type "
        f"{here['model_type']!r})"
    )
