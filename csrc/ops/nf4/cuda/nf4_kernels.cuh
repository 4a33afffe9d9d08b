// CUDA kernels of the NF4 ops, callable without torch: raw pointers and a stream.
//
// W is [N, K] row-major, flattened; weight i is nibble i of `packed` (high nibble first, as
// bitsandbytes packs) and is scaled by absmax[i / 64]. The fused paths need K % 64 == 0 (so
// no 64-weight block straddles two rows) and 16-byte aligned operands; the caller checks
// nf4_fused_supported and otherwise dequantizes and uses cuBLAS.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace peftplug::cuda {

enum class Dtype { kFloat32, kFloat16, kBFloat16 };

// out[i] = code(nibble i) * absmax[i / blocksize], for i < numel, in `dtype`.
cudaError_t nf4_dequantize(const uint8_t* packed, const float* absmax, int64_t numel,
                           int64_t blocksize, void* out, Dtype dtype, cudaStream_t stream);

// out[M, N] = x[M, K] @ deq(W)^T + lora_hidden[M, r] @ lora_b[N, r]^T (+ bias[N]).
// lora_hidden is already scaled (scale * lora_x @ A^T); r == 0 means no LoRA term.
// Every pointer but absmax holds `dtype` values; bias and lora_* may be null.
struct Nf4LinearArgs {
  const void* x;
  const uint8_t* packed;
  const float* absmax;
  const void* bias;
  const void* lora_hidden;
  const void* lora_b;
  int64_t m;
  int64_t n;
  int64_t k;
  int64_t r;
  void* out;
  Dtype dtype;
};

// Whether the fused kernels take this shape and blocksize (else: dequantize + cuBLAS).
bool nf4_fused_supported(int64_t k, int64_t blocksize);

// The forward: a weight-streaming GEMV for m <= 16 (any dtype), a tensor-core GEMM with the
// LoRA product folded into extra K steps otherwise (fp16 and bf16 only).
cudaError_t nf4_lora_linear_forward(const Nf4LinearArgs& args, cudaStream_t stream);

// grad_x[M, K] = grad_out[M, N] @ deq(W)[N, K], through the same 4-bit weight (fp16/bf16).
cudaError_t nf4_matmul_input_grad(const void* grad_out, const uint8_t* packed,
                                  const float* absmax, int64_t m, int64_t n, int64_t k,
                                  void* grad_x, Dtype dtype, cudaStream_t stream);

}  // namespace peftplug::cuda
