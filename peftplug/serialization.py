"""Adapter files: ``adapter_config.json`` + ``adapter_model.safetensors``, strict and atomic."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from peftplug.apply import CONFIG_RECORD, apply, require_state
from peftplug.atomic import atomic_write_files, commit_with_record, directory_lock, finish_commit
from peftplug.base_fingerprint import adapter_fingerprint, check_same_base
from peftplug.checkpoint_manifest import verify_manifest
from peftplug.errors import AdapterLoadError, AdapterSaveError, PeftplugError
from peftplug.hub import is_repo_id, snapshot
from peftplug.model_card import CARD_NAME, is_model_card, model_card
from peftplug.plugins import get_host
from peftplug.portable import portable_base
from peftplug.rollback import rollback_on_error
from peftplug.saved_modules import saved_module_tensors
from peftplug.state import AppliedMethod, PeftState, peft_state

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "peftplug-adapter"
FORMAT_VERSION = 1
TRAINER_CONFIG = "config.json"
TRAINER_WEIGHTS = "model.safetensors"


def method_tensors(
    model: nn.Module, state: PeftState, adapter_name: str | None = None
) -> dict[str, torch.Tensor]:
    """Every live tensor the applied methods own, by ``model.state_dict()`` name."""
    return {
        k: t
        for applied in _selected(state, adapter_name)
        for k, t in _tensors_of(model, applied).items()
    }


def _selected(state: PeftState, adapter_name: str | None) -> list[AppliedMethod]:
    methods = [m for m in state.methods if adapter_name in (None, m.adapter_name)]
    if not methods:
        raise PeftplugError(
            f"no adapter named {adapter_name!r}; this model has: {', '.join(state.adapter_names)}"
        )
    return methods


def _tensors_of(model: nn.Module, applied: AppliedMethod) -> dict[str, torch.Tensor]:
    tensors = get_host().hook.peftplug_state_dict(
        model=model, config=applied.config, adapter_name=applied.adapter_name
    )
    if tensors is None:
        raise PeftplugError(
            f"plugin {applied.spec.plugin!r} does not implement peftplug_state_dict for "
            f"{applied.spec.name!r}: its tensors cannot be saved"
        )
    tensors = {**tensors, **saved_module_tensors(model, applied.adapter_name, applied.spec.name)}
    live = model.state_dict(keep_vars=True)
    for key, tensor in tensors.items():
        if live.get(key) is not tensor:
            raise PeftplugError(
                f"plugin {applied.spec.plugin!r} returned {key!r}, which is not the live tensor "
                "of that name in model.state_dict(): a plugin bug"
            )
    return dict(tensors)


def save_adapter(
    model: nn.Module,
    directory: str | Path,
    *,
    adapter_name: str | None = None,
    allow_non_finite: bool = False,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the adapter (all adapters by default) to ``directory``; returns the directory.

    A tensor holding NaN or Inf (a diverged run) is refused unless ``allow_non_finite``. A
    ``README.md`` model card goes beside it, with ``metrics`` (e.g. held-out accuracy) if given.
    """
    state = require_state(model)
    methods = _selected(state, adapter_name)
    tensors: dict[str, torch.Tensor] = {}
    manifest: dict[str, dict[str, Any]] = {}
    for index, applied in enumerate(methods):
        for key, tensor in _tensors_of(model, applied).items():
            if key in tensors:
                continue  # a module shared by several adapters, e.g. a task head
            tensors[key] = tensor.detach().to("cpu", copy=True).contiguous()
            manifest[key] = {
                "shape": list(tensor.shape),
                "dtype": _dtype_name(tensor),
                "method": index,
            }
    if not allow_non_finite:
        refuse_non_finite(tensors, AdapterSaveError, "save it anyway with allow_non_finite=True")
    weights = safetensors.torch.save(tensors, metadata={"format": "pt"})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "peftplug_version": importlib.metadata.version("peftplug"),
        "base_model": {
            **base_model_record(model),
            "fingerprint": adapter_fingerprint(model, state, methods, tensors),
        },
        "active_adapter": state.active_adapter,
        "methods": [applied.record() for applied in methods],
        "tensors": manifest,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    config["config_sha256"] = config_digest(config)
    card = model_card(config, sum(t.numel() for t in tensors.values()), metrics)
    directory = Path(directory)
    write_adapter(directory, weights, config, {CARD_NAME: card.encode()})
    return directory


def write_adapter(
    directory: Path,
    weights: bytes,
    config: dict[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> None:
    """Commit both files as one unit (``commit_with_record``): the config names the weights.

    ``extra_files`` (the model card) are then written atomically each, under the same lock,
    but never over a file peftplug did not write (a user's own README); they are not part of
    the commit.
    """
    if directory.exists() and not directory.is_dir():
        raise AdapterSaveError(
            f"cannot save the adapter to {directory}: it is a file, and an adapter is a directory "
            f"holding {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}; pass a directory path"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with directory_lock(directory):
            _finish_interrupted_save(directory)
            commit_with_record(
                directory,
                (ADAPTER_WEIGHTS, weights),
                (ADAPTER_CONFIG, (json.dumps(config, indent=2) + "\n").encode()),
                config["weights_sha256"],
            )
            extra = {directory / name: data for name, data in (extra_files or {}).items()}
            atomic_write_files({path: d for path, d in extra.items() if _ours_or_absent(path)})
    except OSError as error:
        raise AdapterSaveError(
            f"cannot save the adapter to {directory}: {error.strerror or error}; the directory "
            "keeps a complete adapter (the previous one, if it held one): free space or fix the "
            "permissions and save again"
        ) from error


def _ours_or_absent(path: Path) -> bool:
    """Whether ``path`` is free to (re)write: missing, or a model card peftplug wrote."""
    try:
        return is_model_card(path.read_bytes())
    except FileNotFoundError:
        return True


def _finish_interrupted_save(directory: Path) -> None:
    """Complete or discard what a killed save left in ``directory`` (see ``finish_commit``)."""
    finish_commit(directory, ADAPTER_WEIGHTS, ADAPTER_CONFIG, _committed_digest(directory))


def _committed_digest(directory: Path) -> str | None:
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    digest = config.get("weights_sha256") if isinstance(config, dict) else None
    return digest if isinstance(digest, str) else None


def base_model_record(model: nn.Module) -> dict[str, Any]:
    """What identifies the base model an adapter was made for, portably (``portable_base``)."""
    config = getattr(model, "config", None)
    name_or_path = getattr(config, "name_or_path", None)
    name, source = portable_base(name_or_path) if name_or_path else (type(model).__name__, "class")
    return {
        "name_or_path": name,
        "source": source,
        "model_type": getattr(config, "model_type", None),
        "architectures": getattr(config, "architectures", None),
    }


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def read_adapter(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The description and tensors of a saved adapter or a Trainer checkpoint, verified.

    First completes or discards what a killed ``save_adapter`` left there, under the lock a
    save holds, so a load never sees half a save. A ``user/repo`` that is not a local directory
    is a Hub id, read from huggingface_hub's cache (downloaded first unless offline).
    """
    if is_repo_id(directory) and not Path(directory).is_dir():
        directory = snapshot(str(directory), [ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD_NAME])
    directory = Path(directory)
    if not directory.is_dir():
        return _read_files(directory)
    with directory_lock(directory):
        _finish_interrupted_save(directory)
        return _read_files(directory)


def _read_files(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if (directory / ADAPTER_CONFIG).is_file():
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
        return config, tensors
    if (directory / TRAINER_CONFIG).is_file():
        record = _read_json(directory / TRAINER_CONFIG).get(CONFIG_RECORD)
        if record is not None:
            verify_manifest(directory, AdapterLoadError)
            tensors = _parse_safetensors(
                _read_bytes(directory / TRAINER_WEIGHTS), directory / TRAINER_WEIGHTS
            )
            return {"methods": record["methods"], "base_model": {}}, tensors
    raise AdapterLoadError(
        f"no adapter in {directory}: expected {ADAPTER_CONFIG} (written by peftplug.save_adapter) "
        f"or a Trainer checkpoint whose {TRAINER_CONFIG} has a {CONFIG_RECORD!r} entry"
    )


def _check_format(config: dict[str, Any], path: Path) -> None:
    """Refuse what is not a peftplug adapter this version reads, saying what it is instead."""
    fmt, version = config.get("format"), config.get("format_version")
    if fmt != FORMAT and "peft_type" in config:
        raise AdapterLoadError(
            f"{path} is an HF PEFT adapter (peft_type {config['peft_type']!r}), not a peftplug "
            "one: load it with peft.PeftModel.from_pretrained"
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
    if version != FORMAT_VERSION:
        raise AdapterLoadError(
            f"{path} has an invalid format_version {version!r} (expected {FORMAT_VERSION}): the "
            "file was edited or damaged; save the adapter again"
        )


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON, without the digest itself."""
    body = {key: value for key, value in config.items() if key != "config_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def refuse_non_finite(
    tensors: Mapping[str, torch.Tensor], error: type[PeftplugError], fix: str
) -> None:
    """Raise ``error`` naming the first floating-point tensor that holds NaN or Inf."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise error(
                f"tensor {key!r} holds NaN or Inf (a diverged run, or a damaged file): lower the "
                f"learning rate or resume from an earlier checkpoint; or {fix}"
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
            or _dtype_name(tensor) != entry["dtype"]
        ):
            raise AdapterLoadError(
                f"{directory}: tensor {key!r} does not match the manifest in {ADAPTER_CONFIG}; "
                "the adapter files are inconsistent: save the adapter again"
            )
    extra = sorted(set(tensors) - set(manifest))
    if extra:
        raise AdapterLoadError(f"{directory}: tensors not in the manifest: {', '.join(extra[:5])}")


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
    exactly as it was.
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
            _check_fits(expected, tensors, description.get("base_model", {}), model)
            if not allow_base_mismatch:  # after the shapes: another architecture says so first
                check_same_base(description.get("base_model", {}), model)
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
            tensor.copy_(tensors[key])
    return model


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
