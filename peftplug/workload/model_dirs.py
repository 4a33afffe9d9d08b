"""Local model directories given on the command line: checked first, loaded with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from peftplug.errors import ConfigError

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def check_model_dir(path: str) -> Path:
    """A local model directory with a config transformers knows and weights to load."""
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"--model {path}: not a transformers model directory (no config.json); give a local "
            "directory written by save_pretrained"
        )
    try:
        AutoConfig.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"--model {path}: its config.json cannot be read: {error}") from None
    if not any(any(directory.glob(pattern)) for pattern in WEIGHT_FILES):
        raise ConfigError(
            f"--model {path} holds no weights ({', '.join(WEIGHT_FILES)}): save the model "
            "there with model.save_pretrained (and its tokenizer with tokenizer.save_pretrained)"
        )
    return directory


def load_from_directory(load: Callable[..., Any], path: str, what: str, **kwargs: Any) -> Any:
    """``load(directory, **kwargs)``, its failure (a missing or broken file) as a ConfigError."""
    directory = check_model_dir(path)
    try:
        return load(directory, **kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(
            f"--model {path}: the {what} cannot be loaded ({type(error).__name__}: {error}); "
            "save it there with save_pretrained"
        ) from None
