"""QLoRA's options: LoRA's, plus how the base is quantized."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from peftplug_lora import LoraConfig

from peftplug import ConfigError
from peftplug.quant import SUPPORTED_BLOCKSIZES

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class QLoraConfig(LoraConfig):
    """LoRA over a base whose linear layers are stored in NF4 (Dettmers et al. 2023).

    ``quantize_modules``: the linear layers stored in 4 bits, in ``target_modules``' forms
    (default ``"all-linear"``: every linear layer but the output layer and the task head;
    embeddings and norms are never quantized). ``blocksize``: values per absmax.
    ``double_quant``: store absmax in 8 bits too. ``compute_dtype``: the dtype the 4-bit
    layers compute in (``"auto"``: the dtype of the weight they replace).
    """

    quantize_modules: list[str] | str = "all-linear"
    blocksize: int = 64
    double_quant: bool = True
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def validate(self) -> None:
        super().validate()
        if self.blocksize not in SUPPORTED_BLOCKSIZES:
            raise ConfigError(
                f"qlora option 'blocksize' must be one of "
                f"{', '.join(map(str, SUPPORTED_BLOCKSIZES))} (64 is QLoRA's), got {self.blocksize}"
            )

    def dtype_for(self, weight_dtype: torch.dtype) -> torch.dtype:
        """The compute dtype of a 4-bit layer that replaces a ``weight_dtype`` weight."""
        return weight_dtype if self.compute_dtype == "auto" else COMPUTE_DTYPES[self.compute_dtype]
