"""What every export starts from: the base model an adapter was trained on, and an empty output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedModel

from peftplug.data.locate import MissingDataPackage, package_file
from peftplug.data.models import causal_lm_path, gguf_path
from peftplug.errors import ConfigError
from peftplug.serialization import read_adapter
from peftplug.targets import TASK_HEAD_ATTRIBUTES
from peftplug.workload.model_dirs import load_from_directory


def _head_rows(tensors: dict[str, Any]) -> int | None:
    """Rows of the saved task head's weight (its number of labels), if the adapter has one."""
    for key, weight in tensors.items():
        head, _, rest = key.partition(".modules_to_save.")
        if head in TASK_HEAD_ATTRIBUTES and rest.endswith(".weight"):
            return int(weight.shape[0])
    return None


def base_model_for(
    adapter: str | Path, model: str | None = None, task: str | None = None
) -> tuple[PreTrainedModel, str]:
    """The plain base model the adapter was trained on, and its directory.

    ``model`` defaults to the base recorded in the adapter; ``task`` to classification when the
    adapter holds a task head (whose rows give the number of labels), else causal-lm.
    """
    description, tensors = read_adapter(adapter)
    labels = _head_rows(tensors)
    task = task or ("classification" if labels is not None else "causal-lm")
    if task == "classification" and labels is None:
        raise ConfigError(
            f"{adapter} holds no task head, so the number of labels is unknown: a classifier "
            "adapter must save its head (e.g. lora's modules_to_save='auto')"
        )
    recorded = description.get("base_model", {}).get("name_or_path")
    return load_base_model(model, recorded, adapter, labels if task == "classification" else None)


def load_base_model(
    model: str | None, recorded: str | None, source: str | Path, labels: int | None
) -> tuple[PreTrainedModel, str]:
    """The base model in directory ``model``, else the one ``recorded`` in ``source``, and its
    directory: a classifier with ``labels`` labels, or a causal LM when ``labels`` is None."""
    path = model or (recorded and local_base(recorded))
    if not path:
        raise ConfigError(
            f"the base model {recorded!r} recorded in {source} is not a shipped model, and it "
            "is not a local model directory: pass --model DIR"
        )
    if labels is not None:
        classifier = AutoModelForSequenceClassification.from_pretrained
        return load_from_directory(classifier, path, "model", num_labels=labels), path
    return load_from_directory(AutoModelForCausalLM.from_pretrained, path, "model"), path


def local_base(recorded: str) -> str | None:
    """The model directory a recorded base names: a local directory, or a shipped model.

    A shipped model is recorded as ``package/relative`` (``peftplug.portable``); the shipped
    GGUF stands for its converted directory (``causal_lm_path``).
    """
    if (Path(recorded) / "config.json").is_file():
        return recorded
    package, _, relative = recorded.partition("/")
    if not package.isidentifier():
        return None
    try:
        path = package_file(package, relative)
    except (MissingDataPackage, ValueError):
        return None
    if path.suffix == ".gguf" and path == gguf_path():
        return str(causal_lm_path())
    return str(path) if (path / "config.json").is_file() else None


def refuse_non_empty(out: Path, overwrite: bool = False) -> Path:
    """``out``, unless it is a file, or a non-empty directory and ``overwrite`` is off."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: name a directory to write into")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {out} exists and is not empty: choose a new directory, or pass --overwrite "
            "to replace the adapter in it"
        )
    return out
