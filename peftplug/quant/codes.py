"""The code tables of the 4-bit NormalFloat format and of its 8-bit absmax compression.

Both are the tables bitsandbytes uses, so packed weights convert between the two bit for bit.
"""

from __future__ import annotations

import functools

import torch

# The 16 NF4 values of the QLoRA paper (Dettmers et al. 2023, appendix E), sorted.
NF4_CODE_VALUES: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
NF4_ZERO_INDEX = 7  # the code of 0.0: what a padding nibble holds


@functools.cache
def _nf4_code_cpu() -> torch.Tensor:
    return torch.tensor(NF4_CODE_VALUES, dtype=torch.float32)


def nf4_code(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16 NF4 values as a float32 tensor on ``device``."""
    return _nf4_code_cpu().to(device)


@functools.cache
def _dynamic_code_cpu() -> torch.Tensor:
    """The signed 8-bit dynamic-exponent map (Dettmers 2015): 7 exponent decades, 256 values.

    Computed in float32 exactly as bitsandbytes' ``create_dynamic_map(signed=True)`` does, so
    the values agree to the last bit.
    """
    values: list[float] = []
    exponent_bits, non_sign_bits = 7, 7
    for i in range(exponent_bits):
        count = 2 ** (i + non_sign_bits - exponent_bits) + 1
        bounds = torch.linspace(0.1, 1, count, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        decade = 10 ** (-(exponent_bits - 1) + i)
        values += (decade * means).tolist()
        values += (-decade * means).tolist()
    values += [0.0, 1.0]
    values.sort()
    return torch.tensor(values, dtype=torch.float32)


def dynamic_code(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 256 values of the 8-bit code that compresses absmax under double quantization."""
    return _dynamic_code_cpu().to(device)
