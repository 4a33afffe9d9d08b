"""Writing adapter files: ``adapter_config.json`` + ``adapter_model.safetensors``, atomically.

An adapter HF PEFT can express (one method with a PEFT equivalent) is written in PEFT's layout,
so ``PeftModel.from_pretrained`` and transformers' ``load_adapter`` read it as it is: PEFT's
config fields and tensor names, with peftplug's own keys beside them (PEFT ignores them). Any
other adapter keeps peftplug's names, and its ``peft_type`` says to load it with peftplug.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from peftplug.atomic import atomic_write_files, commit_with_record, directory_lock, finish_commit
from peftplug.base_fingerprint import adapter_fingerprint
from peftplug.errors import AdapterSaveError, PeftplugError
from peftplug.model_card import CARD_NAME, is_model_card, model_card
from peftplug.peft_layout import PeftAdapter, base_model_name_or_path, peft_adapter
from peftplug.plugins import get_host
from peftplug.portable import portable_base
from peftplug.saved_modules import saved_module_tensors
from peftplug.sharded import full_tensor, is_writer, unsharded_class
from peftplug.state import AppliedMethod, PeftState, require_state

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "peftplug-adapter"
FORMAT_VERSION = 2  # 2: PEFT's layout where PEFT can express the adapter; 1: peftplug names only
# PEFT and transformers fail on an unknown peft_type with a KeyError quoting it
NOT_PEFT = "PEFTPLUG (a peftplug adapter: load it with peftplug.load_adapter)"


def method_tensors(
    model: nn.Module, state: PeftState, adapter_name: str | None = None
) -> dict[str, torch.Tensor]:
    """Every live tensor the applied methods own, by ``model.state_dict()`` name."""
    return {
        k: t
        for applied in selected(state, adapter_name)
        for k, t in _tensors_of(model, applied).items()
    }


def selected(state: PeftState, adapter_name: str | None) -> list[AppliedMethod]:
    """The applied methods of ``adapter_name`` (all of them for ``None``)."""
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


@dataclasses.dataclass(frozen=True)
class FileLayout:
    """The tensors of an adapter file by their names there, and what each one is.

    ``live``: each tensor's ``model.state_dict()`` name, or ``None`` for a value computed from
    live tensors (PEFT's P-tuning and prefix tables), which PEFT reads and peftplug recomputes.
    """

    tensors: dict[str, torch.Tensor]
    live: dict[str, str | None]
    method: dict[str, int]  # each name's index in the adapter's methods
    peft: PeftAdapter | None


def file_layout(model: nn.Module, methods: Sequence[AppliedMethod]) -> FileLayout:
    """What the file of ``methods`` holds: PEFT's layout where PEFT can express it.

    In PEFT's layout, live tensors PEFT has no place for (an encoder it folds) keep their own
    names beside PEFT's, where PEFT, which loads non-strictly, ignores them; unless the method's
    equivalent can rebuild them from PEFT's values (its ``load``), as ``load_adapter`` then does.
    """
    live: dict[str, torch.Tensor] = {}
    method: dict[str, int] = {}
    for index, applied in enumerate(methods):
        for key, tensor in _tensors_of(model, applied).items():
            if key not in live:  # a module shared by several adapters, e.g. a task head
                live[key], method[key] = tensor, index
    adapter = peft_adapter(model, methods[0]) if len(methods) == 1 else None
    if adapter is None:
        return FileLayout(live, {key: key for key in live}, method, None)
    name_of = {id(tensor): key for key, tensor in live.items()}
    saved = adapter.saved()
    in_peft = {id(tensor) for tensor in saved.values()}
    # the live tensors PEFT's computed values stand for: kept only if nothing rebuilds them
    rest = (
        {} if adapter.load is not None else {k: t for k, t in live.items() if id(t) not in in_peft}
    )
    tensors = {**saved, **rest}
    names = {key: name_of.get(id(tensor)) for key, tensor in tensors.items()}
    return FileLayout(tensors, names, dict.fromkeys(tensors, 0), adapter)


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
    A model sharded by FSDP2 (``fully_shard``): call it on every rank, as ``model.state_dict()``;
    each gathers the tensors whole, global rank 0 alone writes (see ``peftplug.sharded``).
    """
    state = require_state(model)
    methods = selected(state, adapter_name)
    layout = file_layout(model, methods)
    tensors = {
        k: full_tensor(t.detach()).to("cpu", copy=True).contiguous()
        for k, t in layout.tensors.items()
    }
    own = {name for name in layout.live.values() if name is not None}
    if not allow_non_finite:
        refuse_non_finite(tensors, AdapterSaveError, "save it anyway with allow_non_finite=True")
    weights = safetensors.torch.save(tensors, metadata={"format": "pt"})
    if layout.peft is not None:
        peft_fields = {**layout.peft.config, "inference_mode": True}
    else:
        peft_fields = {
            "peft_type": NOT_PEFT,
            "base_model_name_or_path": base_model_name_or_path(model),
        }
    config = {
        **peft_fields,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "peftplug_version": importlib.metadata.version("peftplug"),
        "base_model": {
            **base_model_record(model),
            "fingerprint": adapter_fingerprint(model, state, methods, own),
        },
        "active_adapter": state.active_adapter,
        "methods": [applied.record() for applied in methods],
        "tensors": {
            key: {
                "shape": list(t.shape),
                "dtype": dtype_name(t),
                "method": layout.method[key],
                "name": layout.live[key],
            }
            for key, t in tensors.items()
        },
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    config["config_sha256"] = config_digest(config)
    card = model_card(config, sum(t.numel() for k, t in tensors.items() if layout.live[k]), metrics)
    directory = Path(directory)
    if is_writer(layout.tensors.values()):
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
            finish_interrupted_save(directory)
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


def finish_interrupted_save(directory: Path) -> None:
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
    name, source = (
        portable_base(name_or_path) if name_or_path else (unsharded_class(model).__name__, "class")
    )
    return {
        "name_or_path": name,
        "source": source,
        "model_type": getattr(config, "model_type", None),
        "architectures": getattr(config, "architectures", None),
    }


def dtype_name(tensor: torch.Tensor) -> str:
    """The dtype as the manifest writes it (``float32``)."""
    return str(tensor.dtype).removeprefix("torch.")


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
