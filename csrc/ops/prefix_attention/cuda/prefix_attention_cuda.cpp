// CUDA implementation of prefix_attention and its backward (schemas in
// peftplug/ops/prefix_attention.py): the real keys go through PyTorch's flash-attention
// kernels, which return (and, backward, accept) the log-sum-exp; the prefix, P << L
// positions shared by the batch, is merged through the two log-sum-exps into one softmax
// over [prefix; keys]. Its cost is O(B H L P d) next to flash's O(B H L^2 d): the
// (1 + 2P/S) bound of G4. Neither prefix nor keys are concatenated, and the prefix gradient
// is one batched product per head. Masks, dropout, non-square causal attention and fp32
// run the reference (CompositeExplicitAutograd).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

namespace peftplug {
namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor>;
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using ForwardSignature = Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const at::Tensor&,
                                 const std::optional<at::Tensor>&, bool, double, double, int64_t);
using BackwardSignature = Gradients(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const std::optional<at::Tensor>&, bool, double, double,
                                    int64_t, const at::Tensor&, const at::Tensor&);

const c10::DispatchKeySet kReference(c10::DispatchKey::CompositeExplicitAutograd);

// What the flash kernels take: fp16/bf16, one head dim (a multiple of 8 up to 256), no mask, no
// dropout, causal only when square (flash aligns a non-square causal mask bottom-right; the
// op's is upper-left, as SDPA's).
bool flash_path(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                const std::optional<at::Tensor>& mask, bool is_causal, double dropout_p) {
  const auto type = query.scalar_type();
  const int64_t dim = query.size(3);
  return !mask.has_value() && dropout_p == 0 && (type == at::kHalf || type == at::kBFloat16) &&
         dim % 8 == 0 && dim <= 256 && value.size(3) == dim &&
         (!is_causal || query.size(2) == key.size(2));
}

// [B, Hkv, L, D] -> [B, Hkv * groups, L, D] and its gradient back.
at::Tensor expand_heads(const at::Tensor& tensor, int64_t groups) {
  return groups == 1 ? tensor : tensor.repeat_interleave(groups, 1);
}

at::Tensor fold_heads(const at::Tensor& grad, int64_t groups) {
  if (groups == 1) return grad;
  const auto sizes = grad.sizes();
  return grad.reshape({sizes[0], sizes[1] / groups, groups, sizes[2], sizes[3]}).sum(2);
}

// [B, Hq, L, D] as fp32 rows per key/value head: [B, Hkv, G * L, D].
at::Tensor grouped(const at::Tensor& tensor, int64_t kv_heads) {
  const auto sizes = tensor.sizes();
  return tensor.to(at::kFloat).reshape({sizes[0], kv_heads, -1, sizes[3]});
}

Outputs prefix_attention_cuda(const at::Tensor& query, const at::Tensor& key,
                              const at::Tensor& value, const at::Tensor& prefix_key,
                              const at::Tensor& prefix_value,
                              const std::optional<at::Tensor>& mask, bool is_causal, double scale,
                              double dropout_p, int64_t dropout_seed) {
  if (!flash_path(query, key, value, mask, is_causal, dropout_p)) {
    static auto reference = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("peftplug::prefix_attention", "")
                                .typed<ForwardSignature>();
    return reference.redispatch(kReference, query, key, value, prefix_key, prefix_value, mask,
                                is_causal, scale, dropout_p, dropout_seed);
  }
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t kv_heads = key.size(1), groups = query.size(1) / kv_heads;
  const auto flash = at::_scaled_dot_product_flash_attention(
      query, expand_heads(key, groups), expand_heads(value, groups), 0.0, is_causal, false, scale);
  const at::Tensor& key_out = std::get<0>(flash);
  const at::Tensor key_lse = std::get<1>(flash);  // [B, Hq, L], fp32
  const auto sizes = query.sizes();
  const at::Tensor scores =
      at::matmul(grouped(query, kv_heads), prefix_key.to(at::kFloat).transpose(-1, -2)) * scale;
  const at::Tensor lse = at::logaddexp(scores.logsumexp(-1).view(key_lse.sizes()), key_lse);
  const at::Tensor probs = at::exp(scores - lse.view({sizes[0], kv_heads, -1, 1}));
  const at::Tensor out = at::matmul(probs, prefix_value.to(at::kFloat))
                             .view({sizes[0], sizes[1], sizes[2], value.size(3)})
                             .addcmul_(key_out.to(at::kFloat), at::exp(key_lse - lse).unsqueeze(-1));
  return {out.to(query.scalar_type()), lse};
}

Gradients prefix_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& prefix_key, const at::Tensor& prefix_value,
    const std::optional<at::Tensor>& mask, bool is_causal, double scale, double dropout_p,
    int64_t dropout_seed, const at::Tensor& out, const at::Tensor& logsumexp) {
  if (!flash_path(query, key, value, mask, is_causal, dropout_p)) {
    static auto reference = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("peftplug::prefix_attention_backward", "")
                                .typed<BackwardSignature>();
    return reference.redispatch(kReference, grad_out, query, key, value, prefix_key,
                                prefix_value, mask, is_causal, scale, dropout_p, dropout_seed, out,
                                logsumexp);
  }
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t kv_heads = key.size(1), groups = query.size(1) / kv_heads;
  // Given the merged output and log-sum-exp, the flash backward computes exactly the keys'
  // share of the gradient of the one softmax over [prefix; keys]. Without dropout its
  // random-state arguments are unused.
  const at::Tensor unused = at::empty({}, query.options().dtype(at::kLong));
  const auto [grad_q, grad_k, grad_v] = at::_scaled_dot_product_flash_attention_backward(
      grad_out.contiguous(), query, expand_heads(key, groups), expand_heads(value, groups), out,
      logsumexp.to(at::kFloat).contiguous(), at::Tensor(), at::Tensor(), query.size(2),
      key.size(2), 0.0, is_causal, unused, unused, scale);
  const auto sizes = query.sizes();
  const at::Tensor query_rows = grouped(query, kv_heads);
  const at::Tensor grad_rows = grouped(grad_out, kv_heads);
  const at::Tensor keys = prefix_key.to(at::kFloat), values = prefix_value.to(at::kFloat);
  const at::Tensor lse = logsumexp.to(at::kFloat).view({sizes[0], kv_heads, -1, 1});
  const at::Tensor probs = at::exp(at::matmul(query_rows, keys.transpose(-1, -2)) * scale - lse);
  const at::Tensor row_terms =
      at::linalg_vecdot(grad_out.to(at::kFloat), out.to(at::kFloat)).view(lse.sizes());
  // softmax backward: dS = P * (dO . V_p - dO . O) * scale
  const at::Tensor grad_scores =
      probs * (at::matmul(grad_rows, values.transpose(-1, -2)) - row_terms) * scale;
  const at::Tensor grad_query =
      grad_q.to(at::kFloat).add_(at::matmul(grad_scores, keys).view(sizes));
  const at::Tensor grad_prefix_key = at::matmul(grad_scores.transpose(-1, -2), query_rows).sum(0);
  const at::Tensor grad_prefix_value = at::matmul(probs.transpose(-1, -2), grad_rows).sum(0);
  return {grad_query.to(query.scalar_type()).contiguous(),
          fold_heads(grad_k, groups).to(key.scalar_type()).contiguous(),
          fold_heads(grad_v, groups).to(value.scalar_type()).contiguous(),
          grad_prefix_key.to(prefix_key.scalar_type()),
          grad_prefix_value.to(prefix_value.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(peftplug, CUDA, m) {
  m.impl("prefix_attention", &prefix_attention_cuda);
  m.impl("prefix_attention_backward", &prefix_attention_backward_cuda);
}

}  // namespace peftplug
