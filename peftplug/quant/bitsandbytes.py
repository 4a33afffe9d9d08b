"""Convert NF4 weights to and from bitsandbytes' (``quantize_4bit`` / ``QuantState``) tensors.

The layouts are the same, so conversion only renames tensors: nothing is re-quantized.
Reading needs no bitsandbytes import; writing builds its ``QuantState`` and so needs it.
"""

from __future__ import annotations

from typing import Any

import torch

from peftplug.nf4_format import ABSMAX_BLOCKSIZE, NF4FormatError, dynamic_code, nf4_code
from peftplug.quant.format import NF4Weight


def from_bitsandbytes(packed: torch.Tensor, quant_state: Any | None = None) -> NF4Weight:
    """An NF4Weight from bitsandbytes' packed tensor and its ``QuantState``.

    ``packed`` may be a ``Params4bit`` (its ``quant_state`` is used when none is given).
    """
    state = quant_state if quant_state is not None else getattr(packed, "quant_state", None)
    if state is None:
        raise NF4FormatError(
            "no QuantState given: pass the one bitsandbytes.functional.quantize_4bit returned"
        )
    if state.quant_type != "nf4":
        raise NF4FormatError(
            f"bitsandbytes weight is {state.quant_type!r}, not 'nf4': only NF4 converts"
        )
    data = packed.data if isinstance(packed, torch.nn.Parameter) else packed
    if data.dtype != torch.uint8:
        data = data.view(torch.uint8)  # quant_storage other than uint8 holds the same bytes
    common = {"shape": tuple(state.shape), "blocksize": state.blocksize, "dtype": state.dtype}
    if not state.nested:
        return NF4Weight(data.reshape(-1), state.absmax, **common)
    if state.state2.blocksize != ABSMAX_BLOCKSIZE:
        raise NF4FormatError(
            f"nested absmax blocksize {state.state2.blocksize} is not supported: bitsandbytes' "
            f"quantize_4bit uses {ABSMAX_BLOCKSIZE}"
        )
    if not torch.equal(state.state2.code.cpu(), dynamic_code()):
        raise NF4FormatError("the nested absmax uses a code other than the 8-bit dynamic map")
    offset = torch.as_tensor(state.offset, dtype=torch.float32, device=data.device)
    return NF4Weight(
        data.reshape(-1), state.absmax, absmax_scale=state.state2.absmax, absmax_offset=offset,
        **common,
    )


def to_bitsandbytes(weight: NF4Weight) -> tuple[torch.Tensor, Any]:
    """bitsandbytes' ``(packed, QuantState)`` for ``weight``, ready for ``dequantize_4bit``."""
    try:
        from bitsandbytes.functional import QuantState
    except ImportError as error:
        raise NF4FormatError(
            f"to_bitsandbytes needs bitsandbytes ({error}): pip install bitsandbytes"
        ) from error

    device = weight.packed.device
    nested = None
    if weight.double_quantized:
        nested = QuantState(
            absmax=weight.absmax_scale, code=dynamic_code(device), blocksize=ABSMAX_BLOCKSIZE,
            dtype=torch.float32,
        )
    state = QuantState(
        absmax=weight.absmax,
        shape=torch.Size(weight.shape),
        code=nf4_code(device),
        blocksize=weight.blocksize,
        quant_type="nf4",
        dtype=weight.dtype,
        offset=weight.absmax_offset,
        state2=nested,
    )
    return weight.packed.reshape(-1, 1), state
