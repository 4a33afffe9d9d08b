"""Rounding-error bounds for checking a kernel against an fp64 result on any machine.

A sum of ``n`` products computed in a floating-point type with unit roundoff ``u`` differs from
the exact sum by at most ``gamma_n * sum |x_i y_i|``, ``gamma_n = n u / (1 - n u)``, whatever the
order of the additions, blocking or FMA use (Higham, *Accuracy and Stability of Numerical
Algorithms*, section 3.1). Tolerances built from it hold on every CPU and BLAS path, unlike a
multiple of PyTorch's own error on the machine at hand.
"""

from __future__ import annotations

import torch

_UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.bfloat16: 2.0**-8,
    torch.float16: 2.0**-11,
}


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the distance from 1.0 to the next representable number."""
    return _UNIT_ROUNDOFF[dtype]


def gamma(length: int, dtype: torch.dtype) -> float:
    """Higham's gamma_n: the relative error bound of a length-``n`` chain of roundings."""
    product = length * unit_roundoff(dtype)
    if product >= 1:
        raise ValueError(f"{length} roundings in {dtype} bound nothing (n u >= 1)")
    return product / (1 - product)


def assert_within(got: torch.Tensor, exact: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    """Elementwise ``|got - exact| <= bound`` in fp64; infinities must match exactly."""
    assert got.shape == exact.shape, f"{what}: shape {tuple(got.shape)} != {tuple(exact.shape)}"
    got, exact = got.double(), exact.double()
    finite = torch.isfinite(exact)
    if not torch.equal(got[~finite], exact[~finite]) or not bool(torch.isfinite(got[finite]).all()):
        raise AssertionError(f"{what}: infinities or NaNs where the exact result has none, or the reverse")
    error = torch.where(finite, got - exact, 0.0).abs()
    limit = bound.double().expand_as(error)
    excess = error - limit
    if bool((excess > 0).any()):
        worst = int(excess.flatten().argmax())
        raise AssertionError(
            f"{what}: {int((excess > 0).sum())} of {error.numel()} elements exceed the rounding "
            f"bound; worst error {error.flatten()[worst].item():.3g} against a bound of "
            f"{limit.flatten()[worst].item():.3g}"
        )
