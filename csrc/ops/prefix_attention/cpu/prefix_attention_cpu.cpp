// CPU kernels of prefix_attention and its backward (schemas in peftplug/ops/prefix_attention.py).
//
// The real keys go through ATen's fused CPU flash attention, which also returns its
// log-sum-exp. The prefix (P positions per key/value head, shared by the batch) is scored
// with one GEMM per head into a [rows, P] block, turned in place, row by row, into its share
// of one softmax over [prefix; keys] through the two log-sum-exps, and multiplied by the
// prefix values. Nothing is concatenated and the prefix is never expanded per example. The
// backward hands the merged output and log-sum-exp to the flash backward (which then yields
// exactly the keys' share of the gradient) and adds the prefix's share with batched GEMMs,
// the prefix gradient summed over the batch once per head. Attention dropout needs the
// reference's seeded masks, so dropout_p > 0 runs the reference. The row loops of the merge live
// in isa/prefix_attention_kernels.cpp, compiled once per instruction set and chosen at run time.
#include "prefix_attention_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "../../../cpu_capability.h"

namespace peftplug::prefix_attention {
namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor>;
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::ScalarType compute_type(const at::Tensor& query) {
  return query.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The key mask as one additive bias in the query's dtype, the causal triangle folded in.
std::optional<at::Tensor> additive_mask(const std::optional<at::Tensor>& mask, bool is_causal,
                                        const at::Tensor& query, int64_t keys) {
  if (!mask.has_value()) return std::nullopt;
  at::Tensor visible = mask->scalar_type() == at::kBool ? *mask : at::isfinite(*mask);
  if (is_causal)
    visible = visible.logical_and(at::ones({query.size(2), keys}, visible.options()).tril());
  at::Tensor bias = mask->scalar_type() == at::kBool ? at::zeros(visible.sizes(), query.options())
                                                     : mask->to(query.scalar_type());
  return bias.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
}

// The log-sum-exp handed to a backward that computes P = exp(S - lse): rows that attend
// nothing (-inf) get +inf, so their probabilities are 0, not exp(-inf + inf) = NaN.
at::Tensor probability_floor(const at::Tensor& logsumexp) {
  return logsumexp.masked_fill(at::isneginf(logsumexp), std::numeric_limits<double>::infinity());
}

// Attention over the real keys: (out [B, Hq, L, Dv], logsumexp [B, Hq, L]); rows that see
// no key get a log-sum-exp of -inf (the flash kernel reports 0 for them).
Outputs attend_keys(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                    const std::optional<at::Tensor>& bias, bool is_causal, double scale) {
  // the flash kernel reads key/value head h / groups for query head h itself (GQA)
  auto [out, logsumexp] = at::_scaled_dot_product_flash_attention_for_cpu(
      query, key, value, 0.0, is_causal && !bias.has_value(), bias, scale);
  if (bias.has_value()) {
    const at::Tensor blind = at::isinf(*bias).all(-1).expand(logsumexp.sizes());
    logsumexp = logsumexp.masked_fill(blind, -std::numeric_limits<double>::infinity());
  }
  return {out, logsumexp};
}

// Scaled prefix scores [B, Hkv, G * L, P]: one GEMM per key/value head, prefix shared.
at::Tensor prefix_scores(const at::Tensor& grouped_query, const at::Tensor& prefix_key,
                         double scale) {
  return at::matmul(grouped_query, prefix_key.transpose(-1, -2)).mul_(scale);
}

const CpuKernels& active_kernels() { return PEFTPLUG_ACTIVE_CPU_KERNELS(CpuKernels, kCpuKernels); }

template <typename T>
const RowKernels<T>& row_kernels() {
  if constexpr (std::is_same_v<T, float>) return active_kernels().fp32;
  else return active_kernels().fp64;
}

constexpr int64_t kRowsPerTask = 256;

// In place, row by row: prefix scores -> probabilities under one softmax with the keys;
// fills the merged log-sum-exp and the keys' weight exp(key_lse - lse) of each row.
template <typename T>
void merge_softmax(at::Tensor& scores, const at::Tensor& key_lse, at::Tensor& lse, at::Tensor& key_weight) {
  const RowKernels<T>& kernels = row_kernels<T>();
  const int64_t prefix = scores.size(-1);
  T* values = scores.data_ptr<T>();
  const T* key_logsumexp = key_lse.data_ptr<T>();
  T* logsumexp = lse.data_ptr<T>();
  T* weights = key_weight.data_ptr<T>();
  at::parallel_for(0, key_lse.numel(), kRowsPerTask, [&](int64_t first, int64_t last) {
    kernels.merge_softmax(values, prefix, key_logsumexp, logsumexp, weights, first, last);
  });
}

// In place, row by row: prefix scores -> probabilities exp(s - lse) (0 where lse is -inf);
// grad_probs -> grad_scores = P * (dP - dO . O) * scale.
template <typename T>
void softmax_backward(at::Tensor& scores, at::Tensor& grad_probs, const at::Tensor& lse,
                      const at::Tensor& row_terms, double scale) {
  const RowKernels<T>& kernels = row_kernels<T>();
  const int64_t prefix = scores.size(-1);
  T* probs = scores.data_ptr<T>();
  T* grads = grad_probs.data_ptr<T>();
  const T* logsumexp = lse.data_ptr<T>();
  const T* terms = row_terms.data_ptr<T>();
  at::parallel_for(0, lse.numel(), kRowsPerTask, [&](int64_t first, int64_t last) {
    kernels.softmax_backward(probs, grads, prefix, logsumexp, terms, static_cast<T>(scale), first, last);
  });
}

// [B, Hq, L, D] viewed per key/value head: [B, Hkv, G * L, D], in compute precision.
at::Tensor grouped(const at::Tensor& tensor, int64_t kv_heads, at::ScalarType compute) {
  const auto sizes = tensor.sizes();
  return tensor.to(compute).reshape({sizes[0], kv_heads, -1, sizes[3]});
}

Outputs prefix_attention_cpu(const at::Tensor& query, const at::Tensor& key,
                             const at::Tensor& value, const at::Tensor& prefix_key,
                             const at::Tensor& prefix_value, const std::optional<at::Tensor>& mask,
                             bool is_causal, double scale, double dropout_p, int64_t dropout_seed) {
  if (dropout_p > 0) {
    static auto reference =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("peftplug::prefix_attention", "")
            .typed<Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           bool, double, double, int64_t)>();
    return reference.redispatch(c10::DispatchKeySet(c10::DispatchKey::CompositeExplicitAutograd),
                                query, key, value, prefix_key, prefix_value, mask, is_causal,
                                scale, dropout_p, dropout_seed);
  }
  const at::ScalarType compute = compute_type(query);
  const auto bias = additive_mask(mask, is_causal, query, key.size(2));
  const auto [key_out, key_lse] = attend_keys(query, key, value, bias, is_causal, scale);
  const int64_t kv_heads = key.size(1);
  const auto sizes = query.sizes();
  at::Tensor scores =
      prefix_scores(grouped(query, kv_heads, compute), prefix_key.to(compute), scale);
  at::Tensor lse = at::empty({sizes[0], sizes[1], sizes[2]}, scores.options());
  at::Tensor key_weight = at::empty_like(lse);
  AT_DISPATCH_FLOATING_TYPES(compute, "prefix_attention_cpu", [&] {
    merge_softmax<scalar_t>(scores, key_lse.to(compute).contiguous(), lse, key_weight);
  });
  at::Tensor out = at::matmul(scores, prefix_value.to(compute))
                       .view({sizes[0], sizes[1], sizes[2], value.size(3)})
                       .addcmul_(key_out.to(compute), key_weight.unsqueeze(-1));
  return {out.to(query.scalar_type()), lse};
}

Gradients prefix_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& prefix_key, const at::Tensor& prefix_value,
    const std::optional<at::Tensor>& mask, bool is_causal, double scale, double dropout_p,
    int64_t dropout_seed, const at::Tensor& out, const at::Tensor& logsumexp) {
  if (dropout_p > 0) {
    static auto reference =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("peftplug::prefix_attention_backward", "")
            .typed<Gradients(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const std::optional<at::Tensor>&, bool, double, double, int64_t,
                             const at::Tensor&, const at::Tensor&)>();
    return reference.redispatch(c10::DispatchKeySet(c10::DispatchKey::CompositeExplicitAutograd),
                                grad_out, query, key, value, prefix_key, prefix_value, mask,
                                is_causal, scale, dropout_p, dropout_seed, out, logsumexp);
  }
  const at::ScalarType compute = compute_type(query);
  const auto bias = additive_mask(mask, is_causal, query, key.size(2));
  // Given the merged output and log-sum-exp, the flash backward computes exactly the keys'
  // share of the gradient of the one softmax over [prefix; keys].
  const auto [grad_q, grad_k, grad_v] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
      grad_out.contiguous(), query, key, value, out, probability_floor(logsumexp.to(compute)), 0.0,
      is_causal && !bias.has_value(), bias, scale);
  const int64_t kv_heads = key.size(1);
  const at::Tensor query_rows = grouped(query, kv_heads, compute);
  const at::Tensor grad_rows = grouped(grad_out, kv_heads, compute);
  const at::Tensor keys = prefix_key.to(compute), values = prefix_value.to(compute);
  at::Tensor probs = prefix_scores(query_rows, keys, scale);
  at::Tensor grad_scores = at::matmul(grad_rows, values.transpose(-1, -2));
  const at::Tensor row_terms = at::linalg_vecdot(grad_out.to(compute), out.to(compute)).contiguous();
  AT_DISPATCH_FLOATING_TYPES(compute, "prefix_attention_backward_cpu", [&] {
    softmax_backward<scalar_t>(probs, grad_scores, logsumexp.to(compute).contiguous(), row_terms,
                               scale);
  });
  // each prefix gradient is summed over the batch once: it is per head, not per example
  const at::Tensor grad_prefix_key = at::matmul(grad_scores.transpose(-1, -2), query_rows).sum(0);
  const at::Tensor grad_prefix_value = at::matmul(probs.transpose(-1, -2), grad_rows).sum(0);
  const at::Tensor grad_query =
      grad_q.to(compute).add_(at::matmul(grad_scores, keys).view(query.sizes()));
  // contiguous, as the fake kernel promises (the flash backward's are laid out [B, L, H, D])
  return {grad_query.to(query.scalar_type()).contiguous(),
          grad_k.to(key.scalar_type()).contiguous(), grad_v.to(value.scalar_type()).contiguous(),
          grad_prefix_key.to(prefix_key.scalar_type()),
          grad_prefix_value.to(prefix_value.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(peftplug, CPU, m) {
  m.impl("prefix_attention", &prefix_attention_cpu);
  m.impl("prefix_attention_backward", &prefix_attention_backward_cpu);
}

}  // namespace peftplug::prefix_attention
