"""Prefix attention: attention over ``[prefix; keys]`` where the prefix is shared by the batch.

``torch.ops.peftplug.prefix_attention(query, key, value, prefix_key, prefix_value, mask,
is_causal, scale, dropout_p, dropout_seed) -> (out, logsumexp)``, with B batch, Hq query heads,
Hkv key/value heads (Hq a multiple of Hkv), Lq queries, Lk keys, P prefix positions:

- ``query`` [B, Hq, Lq, D], ``key`` [B, Hkv, Lk, D], ``value`` [B, Hkv, Lk, Dv];
  query head ``h`` reads key/value head ``h // (Hq // Hkv)`` (transformers' ``repeat_kv``).
- ``prefix_key`` [Hkv, P, D], ``prefix_value`` [Hkv, P, Dv]: one prefix per layer, never
  expanded per example. Every query attends every prefix position.
- ``mask`` (optional) covers the non-prefix keys only: bool (True = attend) or additive float,
  shaped [B or 1, Hq or 1, Lq, Lk]. It gets no gradient.
- ``is_causal``: query ``i`` attends key ``j <= i`` (upper-left, as in SDPA); it combines with
  ``mask``. ``scale`` defaults to ``D ** -0.5``.
- ``dropout_p`` drops attention probabilities with a mask drawn from ``dropout_seed``, so the
  backward (and a checkpointed recompute) draws the same mask.
- ``out`` [B, Hq, Lq, Dv] in the query's dtype; ``logsumexp`` [B, Hq, Lq] in fp32 (fp64 for fp64
  inputs; ``-inf`` for a row that attends nothing, whose output is 0 as in SDPA) is saved for the backward, which is
  its own op, ``prefix_attention_backward``, so a fused kernel can replace either per device.

The references below are registered as ``CompositeExplicitAutograd``: they run on every device
without a compiled kernel and are the oracle in tests. They never concatenate or expand the
prefix: scores against the keys and against the prefix are computed apart and share one
softmax through their log-sum-exp.
"""

from __future__ import annotations

import torch

from peftplug.errors import PeftplugError

_library = torch.library.Library("peftplug", "FRAGMENT")
_library.define(
    "prefix_attention(Tensor query, Tensor key, Tensor value, Tensor prefix_key, "
    "Tensor prefix_value, Tensor? mask, bool is_causal, float scale, float dropout_p, "
    "int dropout_seed) -> (Tensor out, Tensor logsumexp)"
)
_library.define(
    "prefix_attention_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value, "
    "Tensor prefix_key, Tensor prefix_value, Tensor? mask, bool is_causal, float scale, "
    "float dropout_p, int dropout_seed, Tensor out, Tensor logsumexp) -> (Tensor grad_query, "
    "Tensor grad_key, Tensor grad_value, Tensor grad_prefix_key, Tensor grad_prefix_value)"
)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# Reference kernels -----------------------------------------------------------------------
def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float32 if tensor.dtype in _LOW_PRECISION else tensor.dtype


def _grouped_mask(mask: torch.Tensor, kv_heads: int, groups: int) -> torch.Tensor:
    """[B|1, Hq|1, Lq, Lk] -> [B|1, Hkv|1, G|1, Lq, Lk], matching the grouped scores."""
    batch, heads, length, keys = mask.shape
    if heads == 1:
        return mask.view(batch, 1, 1, length, keys)
    return mask.view(batch, kv_heads, groups, length, keys)


def _scores(
    query: torch.Tensor,
    key: torch.Tensor,
    prefix_key: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled scores against the prefix [B, Hkv, G*Lq, P] and the keys [B, Hkv, G*Lq, Lk]."""
    batch, heads, length, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    grouped = query.reshape(batch, kv_heads, groups * length, dim)
    prefix_scores = torch.einsum("bhmd,hpd->bhmp", grouped, prefix_key) * scale
    key_scores = (grouped @ key.transpose(-1, -2)) * scale
    if mask is not None or is_causal:
        key_scores = key_scores.view(batch, kv_heads, groups, length, keys)
        if mask is not None:
            mask = _grouped_mask(mask, kv_heads, groups)
            if mask.dtype == torch.bool:
                key_scores = key_scores.masked_fill(~mask, float("-inf"))
            else:
                key_scores = key_scores + mask.to(key_scores.dtype)
        if is_causal:
            visible = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril()
            key_scores = key_scores.masked_fill(~visible, float("-inf"))
        key_scores = key_scores.reshape(batch, kv_heads, groups * length, keys)
    return prefix_scores, key_scores


def _probabilities(scores: torch.Tensor, logsumexp: torch.Tensor) -> torch.Tensor:
    # rows that attend nothing have logsumexp -inf: give them probability 0, not NaN
    safe = torch.where(torch.isinf(logsumexp), torch.zeros_like(logsumexp), logsumexp)
    return torch.exp(scores - safe.unsqueeze(-1))


def _dropout_keep(
    prefix_shape: torch.Size, key_shape: torch.Size, dropout_p: float, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept positions of the prefix and key probabilities, the same for a given seed."""
    generator = torch.Generator(device=device).manual_seed(seed)
    keep_prefix = torch.rand(prefix_shape, generator=generator, device=device) >= dropout_p
    keep_keys = torch.rand(key_shape, generator=generator, device=device) >= dropout_p
    return keep_prefix, keep_keys


def prefix_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    dropout_p: float,
    dropout_seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over both score blocks at once, then ``P_prefix @ prefix_value + P_keys @ value``."""
    dtype = _compute_dtype(query)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    pk, pv = prefix_key.to(dtype), prefix_value.to(dtype)
    prefix_scores, key_scores = _scores(q, k, pk, mask, is_causal, scale)
    logsumexp = torch.logaddexp(prefix_scores.logsumexp(-1), key_scores.logsumexp(-1))
    prefix_probs = _probabilities(prefix_scores, logsumexp)
    key_probs = _probabilities(key_scores, logsumexp)
    if dropout_p > 0:
        keep_prefix, keep_keys = _dropout_keep(
            prefix_probs.shape, key_probs.shape, dropout_p, dropout_seed, query.device
        )
        prefix_probs = prefix_probs * keep_prefix / (1 - dropout_p)
        key_probs = key_probs * keep_keys / (1 - dropout_p)
    out = key_probs @ v + torch.einsum("bhmp,hpd->bhmd", prefix_probs, pv)
    batch, heads, length, _ = query.shape
    out = out.reshape(batch, heads, length, value.shape[-1]).to(query.dtype)
    return out, logsumexp.reshape(batch, heads, length)


def prefix_attention_backward_reference(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    dropout_p: float,
    dropout_seed: int,
    out: torch.Tensor,
    logsumexp: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recompute the probabilities from ``logsumexp``; ``dS = P * (dP - rowsum(dO * O))``."""
    dtype = _compute_dtype(query)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    pk, pv = prefix_key.to(dtype), prefix_value.to(dtype)
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    rows = heads // kv_heads * length
    grad = grad_out.to(dtype).reshape(batch, kv_heads, rows, value.shape[-1])
    output = out.to(dtype).reshape(batch, kv_heads, rows, value.shape[-1])
    lse = logsumexp.to(dtype).reshape(batch, kv_heads, rows)
    prefix_scores, key_scores = _scores(q, k, pk, mask, is_causal, scale)
    prefix_probs = _probabilities(prefix_scores, lse)
    key_probs = _probabilities(key_scores, lse)
    grad_prefix_probs = torch.einsum("bhmd,hpd->bhmp", grad, pv)
    grad_key_probs = grad @ v.transpose(-1, -2)
    dropped_prefix, dropped_keys = prefix_probs, key_probs
    if dropout_p > 0:
        keep_prefix, keep_keys = _dropout_keep(
            prefix_probs.shape, key_probs.shape, dropout_p, dropout_seed, query.device
        )
        dropped_prefix = prefix_probs * keep_prefix / (1 - dropout_p)
        dropped_keys = key_probs * keep_keys / (1 - dropout_p)
        grad_prefix_probs = grad_prefix_probs * keep_prefix / (1 - dropout_p)
        grad_key_probs = grad_key_probs * keep_keys / (1 - dropout_p)
    delta = (grad * output).sum(-1, keepdim=True)
    grad_prefix_scores = prefix_probs * (grad_prefix_probs - delta) * scale
    grad_key_scores = key_probs * (grad_key_probs - delta) * scale
    grouped = q.reshape(batch, kv_heads, rows, dim)
    grad_query = grad_key_scores @ k + torch.einsum("bhmp,hpd->bhmd", grad_prefix_scores, pk)
    grad_key = grad_key_scores.transpose(-1, -2) @ grouped
    grad_value = dropped_keys.transpose(-1, -2) @ grad
    grad_prefix_key = torch.einsum("bhmp,bhmd->hpd", grad_prefix_scores, grouped)
    grad_prefix_value = torch.einsum("bhmp,bhmd->hpd", dropped_prefix, grad)
    return (
        grad_query.reshape(query.shape).to(query.dtype),
        grad_key.to(key.dtype),
        grad_value.to(value.dtype),
        grad_prefix_key.to(prefix_key.dtype),
        grad_prefix_value.to(prefix_value.dtype),
    )


_library.impl("prefix_attention", prefix_attention_reference, "CompositeExplicitAutograd")
_library.impl(
    "prefix_attention_backward", prefix_attention_backward_reference, "CompositeExplicitAutograd"
)


# Fake kernels (shapes and dtypes only) -----------------------------------------------------
@torch.library.register_fake("peftplug::prefix_attention", lib=_library)
def _prefix_attention_fake(query, key, value, prefix_key, prefix_value, mask, is_causal, scale, dropout_p, dropout_seed):
    batch, heads, length, _ = query.shape
    out = query.new_empty((batch, heads, length, value.shape[-1]))
    return out, query.new_empty((batch, heads, length), dtype=_compute_dtype(query))


@torch.library.register_fake("peftplug::prefix_attention_backward", lib=_library)
def _prefix_attention_backward_fake(grad_out, query, key, value, prefix_key, prefix_value, mask, is_causal, scale, dropout_p, dropout_seed, out, logsumexp):
    return (
        torch.empty_like(query),
        torch.empty_like(key),
        torch.empty_like(value),
        torch.empty_like(prefix_key),
        torch.empty_like(prefix_value),
    )


# Autograd ------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output) -> None:
    query, key, value, prefix_key, prefix_value, mask, is_causal, scale, dropout_p, seed = inputs
    out, logsumexp = output
    ctx.save_for_backward(query, key, value, prefix_key, prefix_value, mask, out, logsumexp)
    ctx.is_causal, ctx.scale, ctx.dropout_p, ctx.dropout_seed = is_causal, scale, dropout_p, seed
    ctx.mark_non_differentiable(logsumexp)


def _backward(ctx, grad_out, grad_logsumexp):
    query, key, value, prefix_key, prefix_value, mask, out, logsumexp = ctx.saved_tensors
    grads = torch.ops.peftplug.prefix_attention_backward(
        grad_out.contiguous(), query, key, value, prefix_key, prefix_value, mask,
        ctx.is_causal, ctx.scale, ctx.dropout_p, ctx.dropout_seed, out, logsumexp,
    )
    needed = [g if need else None for g, need in zip(grads, ctx.needs_input_grad, strict=False)]
    return (*needed, None, None, None, None, None)


torch.library.register_autograd(
    "peftplug::prefix_attention", _backward, setup_context=_setup_context, lib=_library
)


# Checked entry point ------------------------------------------------------------------------
def check_shapes(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    mask: torch.Tensor | None,
) -> None:
    """Raise a PeftplugError naming the first operand whose shape does not fit the others."""
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise PeftplugError(
            "prefix attention takes query, key and value as 4-D [batch, heads, length, head_dim] "
            f"tensors; got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    batch, heads, length, dim = query.shape
    kv_batch, kv_heads, keys, key_dim = key.shape
    value_dim = value.shape[-1]
    if kv_batch != batch or key_dim != dim or value.shape[:3] != key.shape[:3]:
        raise PeftplugError(
            f"key {tuple(key.shape)} and value {tuple(value.shape)} do not fit query "
            f"{tuple(query.shape)}: they need its batch, one length, and key the head_dim {dim}"
        )
    if heads % kv_heads:
        raise PeftplugError(
            f"{heads} query heads cannot share {kv_heads} key/value heads: grouped-query "
            "attention needs the query heads to be a multiple of the key/value heads"
        )
    if prefix_key.dim() != 3 or prefix_key.shape[0] != kv_heads or prefix_key.shape[2] != dim:
        raise PeftplugError(
            f"prefix_key {tuple(prefix_key.shape)} must be [{kv_heads}, prefix_length, {dim}] "
            "(one prefix per key/value head, shared by the batch)"
        )
    if prefix_value.shape != (kv_heads, prefix_key.shape[1], value_dim):
        raise PeftplugError(
            f"prefix_value {tuple(prefix_value.shape)} must be "
            f"[{kv_heads}, {prefix_key.shape[1]}, {value_dim}] to match prefix_key and value"
        )
    if mask is not None and (
        mask.dim() != 4
        or mask.shape[0] not in (1, batch)
        or mask.shape[1] not in (1, heads)
        or mask.shape[2:] != (length, keys)
    ):
        raise PeftplugError(
            f"mask {tuple(mask.shape)} must be [{batch} or 1, {heads} or 1, {length}, {keys}]: it "
            "covers the non-prefix keys only (prefix positions are always attended)"
        )


def attend_with_prefix(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention of ``query`` over ``[prefix; key]``, [B, Hq, Lq, Dv] (see the module docstring).

    The dropout seed is drawn from torch's global generator, so a checkpointed recompute,
    which restores that generator, drops the same positions.
    """
    check_shapes(query, key, value, prefix_key, prefix_value, mask)
    if not 0.0 <= dropout_p < 1.0:
        raise PeftplugError(f"dropout_p must be in [0, 1), got {dropout_p}")
    seed = int(torch.randint(0, 2**62, ())) if dropout_p > 0 else 0
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    out, _ = torch.ops.peftplug.prefix_attention(
        query, key, value, prefix_key, prefix_value, mask, is_causal, scale, dropout_p, seed
    )
    return out
