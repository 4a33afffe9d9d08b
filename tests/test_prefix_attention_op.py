"""torch.ops.peftplug.prefix_attention against concatenate-K/V-then-SDPA, written here on its own."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from peftplug import PeftplugError
from peftplug.ops import attend_with_prefix

BATCH, LENGTH, DIM = 2, 5, 4


def _concatenated_reference(
    query, key, value, prefix_key, prefix_value, mask, is_causal, scale=None
):
    """Expand the prefix per example, repeat K/V heads, extend the mask by ones, then SDPA."""
    batch, heads, length = query.shape[:3]
    groups = heads // key.shape[1]
    keys = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)
    values = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)
    keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    visible = torch.zeros(batch, heads, length, key.shape[2], dtype=query.dtype)
    if mask is not None:
        visible = visible + (mask if mask.dtype != torch.bool else torch.where(mask, 0.0, -torch.inf))
    if is_causal:
        causal = torch.ones(length, key.shape[2], dtype=torch.bool).tril()
        visible = visible.masked_fill(~causal, -torch.inf)
    prefix_columns = torch.zeros(batch, heads, length, prefix_key.shape[1], dtype=query.dtype)
    full_mask = torch.cat([prefix_columns, visible], dim=-1)
    return F.scaled_dot_product_attention(query, keys, values, attn_mask=full_mask, scale=scale)


def _operands(heads: int, kv_heads: int, prefix: int, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_()

    return (
        tensor(BATCH, heads, LENGTH, DIM),
        tensor(BATCH, kv_heads, LENGTH, DIM),
        tensor(BATCH, kv_heads, LENGTH, DIM),
        tensor(kv_heads, prefix, DIM),
        tensor(kv_heads, prefix, DIM),
    )


def _masks(heads: int) -> dict[str, torch.Tensor | None]:
    padding = torch.ones(BATCH, 1, LENGTH, LENGTH, dtype=torch.bool)
    padding[0, ..., :2] = False  # the first example is left-padded by two tokens
    additive = torch.randn(1, heads, LENGTH, LENGTH, generator=torch.Generator().manual_seed(1))
    return {"none": None, "padding": padding, "additive-per-head": additive.double()}


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "additive-per-head"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("prefix", [0, 3])
def test_forward_and_backward_match_the_concatenation(
    heads: int, kv_heads: int, mask_kind: str, is_causal: bool, prefix: int
) -> None:
    mask = _masks(heads)[mask_kind]
    operands = _operands(heads, kv_heads, prefix)
    ours = attend_with_prefix(*operands, mask, is_causal=is_causal)
    expected = _concatenated_reference(*operands, mask, is_causal)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    upstream = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, operands, upstream)
    expected_grads = torch.autograd.grad(expected, operands, upstream, allow_unused=True)
    for name, grad, want in zip(["q", "k", "v", "pk", "pv"], grads, expected_grads, strict=True):
        want = torch.zeros_like(grad) if want is None else want
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12, msg=f"grad of {name}")


def test_a_zero_length_prefix_is_plain_sdpa() -> None:
    query, key, value, prefix_key, prefix_value = _operands(6, 2, 0)
    ours = attend_with_prefix(query, key, value, prefix_key, prefix_value, is_causal=True)
    plain = F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(ours, plain, rtol=1e-10, atol=1e-12)


def test_an_explicit_scale_is_used() -> None:
    operands = _operands(4, 2, 3)
    ours = attend_with_prefix(*operands, scale=0.3)
    torch.testing.assert_close(ours, _concatenated_reference(*operands, None, False, scale=0.3))


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_gradcheck_in_fp64(dropout_p: float) -> None:
    mask = _masks(6)["padding"]

    def attention(*operands: torch.Tensor) -> torch.Tensor:
        out, _ = torch.ops.peftplug.prefix_attention(*operands, mask, True, 0.5, dropout_p, 1234)
        return out

    assert torch.autograd.gradcheck(attention, _operands(6, 2, 3))


def test_dropout_is_fixed_by_the_seed_and_changes_with_it() -> None:
    operands = [t.detach() for t in _operands(6, 2, 3)]

    def run(seed: int) -> torch.Tensor:
        return torch.ops.peftplug.prefix_attention(*operands, None, False, 0.5, 0.5, seed)[0]

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))
    no_dropout = torch.ops.peftplug.prefix_attention(*operands, None, False, 0.5, 0.0, 7)[0]
    average = torch.stack([run(seed) for seed in range(400)]).mean(0)
    torch.testing.assert_close(average, no_dropout, rtol=0, atol=0.15)  # inverted dropout: unbiased


@pytest.mark.parametrize("mask_kind", ["none", "padding"])
def test_opcheck(mask_kind: str) -> None:
    operands = [t.detach().float().requires_grad_() for t in _operands(6, 2, 3)]
    mask = _masks(6)[mask_kind]
    torch.library.opcheck(
        torch.ops.peftplug.prefix_attention.default, (*operands, mask, True, 0.5, 0.0, 0)
    )
    out, logsumexp = torch.ops.peftplug.prefix_attention(*operands, mask, True, 0.5, 0.0, 0)
    detached = [t.detach() for t in operands]
    backward_args = (torch.randn_like(out), *detached, mask, True, 0.5, 0.0, 0, out.detach(), logsumexp)
    torch.library.opcheck(torch.ops.peftplug.prefix_attention_backward.default, backward_args)


def test_bf16_error_is_within_twice_sdpas_own() -> None:
    operands = [t.detach().float() for t in _operands(6, 2, 3)]
    mask = _masks(6)["padding"]
    exact = _concatenated_reference(*[t.double() for t in operands], mask, True)
    low = [t.bfloat16() for t in operands]
    ours = attend_with_prefix(*low, mask, is_causal=True).double()
    sdpa_bf16 = _concatenated_reference(*low, mask, True).double()
    assert (ours - exact).abs().max() <= 2 * (sdpa_bf16 - exact).abs().max() + 1e-3


def test_the_prefix_is_not_expanded_per_example() -> None:
    """The prefix's gradient sums over the batch: one [Hkv, P, D] tensor, whatever the batch."""
    query, key, value, prefix_key, prefix_value = _operands(6, 2, 3)
    out = attend_with_prefix(query, key, value, prefix_key, prefix_value)
    (grad,) = torch.autograd.grad(out.sum(), prefix_value)
    assert grad.shape == prefix_value.shape
    single = attend_with_prefix(query[:1], key[:1], value[:1], prefix_key, prefix_value)
    (grad_first,) = torch.autograd.grad(single.sum(), prefix_value)
    second = attend_with_prefix(query[1:], key[1:], value[1:], prefix_key, prefix_value)
    (grad_second,) = torch.autograd.grad(second.sum(), prefix_value)
    torch.testing.assert_close(grad, grad_first + grad_second)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda o: (o[0], o[1], o[2], o[3][:, :, :2], o[4]), "prefix_key .* must be"),
        (lambda o: (o[0], o[1], o[2], o[3], o[4][:, :2]), "prefix_value .* must be"),
        (lambda o: (o[0][:, :5], o[1], o[2], o[3], o[4]), "cannot share"),
        (lambda o: (o[0], o[1][:1], o[2], o[3], o[4]), "do not fit query"),
        (lambda o: (o[0][0], o[1], o[2], o[3], o[4]), "4-D"),
    ],
)
def test_bad_shapes_are_explained(change, message: str) -> None:
    with pytest.raises(PeftplugError, match=message):
        attend_with_prefix(*change(_operands(6, 2, 3)))


def test_a_mask_of_the_wrong_shape_is_explained() -> None:
    with pytest.raises(PeftplugError, match="covers the non-prefix keys only"):
        attend_with_prefix(*_operands(6, 2, 3), torch.ones(BATCH, 1, LENGTH, LENGTH + 3).bool())
