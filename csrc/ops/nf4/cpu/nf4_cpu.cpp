// CPU kernels of the NF4 ops (schemas in peftplug/ops/nf4.py).
//
// The inner loops live in isa/nf4_kernels.cpp, compiled once per instruction set; this file,
// compiled once with the default flags, picks the copy for the CPU at run time
// (active_cpu_capability) and splits the work across threads. nf4_lora_linear at M <= 16 fp32
// rows never builds the float weight (it is read at 4 bits and decoded in L1); larger M and
// other dtypes dequantize and use the BLAS GEMM, whose cost then dwarfs the dequantization.
#include "nf4_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../../cpu_capability.h"

namespace peftplug::nf4 {
namespace {

// Output features per task: a multiple of every instruction set's tile width.
constexpr int64_t kFeaturesPerTask = 24;
constexpr int64_t kWeightsPerTask = 4096;

const CpuKernels& active_kernels() { return PEFTPLUG_ACTIVE_CPU_KERNELS(CpuKernels, kCpuKernels); }

void check_inputs(const at::Tensor& packed, const at::Tensor& absmax, int64_t blocksize) {
  TORCH_CHECK(packed.scalar_type() == at::kByte, "nf4: packed must be uint8");
  TORCH_CHECK(absmax.scalar_type() == at::kFloat, "nf4: absmax must be float32");
  TORCH_CHECK(blocksize > 0 && (blocksize & (blocksize - 1)) == 0, "nf4: blocksize must be a power of two, got ",
              blocksize);
}

// Dense (rows, cols) float32 weight, decoded in parallel.
at::Tensor dequantize_float(const at::Tensor& packed_in, const at::Tensor& absmax_in, int64_t rows,
                            int64_t cols, int64_t blocksize) {
  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor absmax = absmax_in.contiguous();
  at::Tensor out = at::empty({rows, cols}, absmax.options());
  const CpuKernels& kernels = active_kernels();
  const uint8_t* codes = packed.data_ptr<uint8_t>();
  const float* scales = absmax.data_ptr<float>();
  float* result = out.data_ptr<float>();
  at::parallel_for(0, rows * cols, kWeightsPerTask, [&](int64_t first, int64_t last) {
    kernels.dequantize(codes, scales, blocksize, first, last, result + first);
  });
  return out;
}

at::Tensor nf4_dequantize_cpu(const at::Tensor& packed, const at::Tensor& absmax,
                              at::IntArrayRef shape, int64_t blocksize, at::ScalarType dtype) {
  check_inputs(packed, absmax, blocksize);
  int64_t numel = 1;
  for (int64_t size : shape) numel *= size;
  return dequantize_float(packed, absmax, 1, numel, blocksize).to(dtype).reshape(shape);
}

// x2 (rows <= kMaxFusedRows, in) fp32 times the NF4 weight^T, without the float weight.
at::Tensor fused_matmul(const at::Tensor& x2, const at::Tensor& packed_in, const at::Tensor& absmax_in,
                        int64_t out_features, int64_t blocksize) {
  const int64_t rows = x2.size(0), in_features = x2.size(1);
  at::Tensor y = at::empty({rows, out_features}, x2.options());
  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor absmax = absmax_in.contiguous();
  const CpuKernels& kernels = active_kernels();
  const float* x = x2.data_ptr<float>();
  const uint8_t* codes = packed.data_ptr<uint8_t>();
  const float* scales = absmax.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const int64_t tasks = (out_features + kFeaturesPerTask - 1) / kFeaturesPerTask;
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    kernels.matmul(x, rows, in_features, codes, scales, blocksize, out_features, first * kFeaturesPerTask,
                   std::min(out_features, last * kFeaturesPerTask), out);
  });
  return y;
}

at::Tensor nf4_lora_linear_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& absmax,
                               int64_t out_features, int64_t blocksize,
                               const std::optional<at::Tensor>& bias, const at::Tensor& lora_x,
                               const at::Tensor& lora_a, const at::Tensor& lora_b, double scale) {
  check_inputs(packed, absmax, blocksize);
  const int64_t cols_in = x.size(-1);
  const at::Tensor x2 = x.reshape({-1, cols_in}).contiguous();
  at::Tensor y;
  if (x.scalar_type() == at::kFloat && x2.size(0) <= kMaxFusedRows) {
    y = fused_matmul(x2, packed, absmax, out_features, blocksize);
    if (bias.has_value()) y.add_(*bias);
  } else {
    const at::Tensor weight =
        dequantize_float(packed, absmax, out_features, cols_in, blocksize).to(x.scalar_type());
    y = at::linear(x2, weight, bias);
  }
  if (lora_a.size(0) > 0) {
    const at::Tensor hidden = at::mm(lora_x.reshape({-1, cols_in}), lora_a.t());
    y.add_(at::mm(hidden, lora_b.t()).mul_(scale).to(y.scalar_type()));
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  return y.reshape(shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nf4_lora_linear_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& packed, const at::Tensor& absmax, int64_t out_features,
    int64_t blocksize, const at::Tensor& lora_x, const at::Tensor& lora_a, const at::Tensor& lora_b,
    double scale, bool need_grad_x) {
  check_inputs(packed, absmax, blocksize);
  const int64_t cols_in = lora_x.size(-1);
  at::Tensor grad_x = grad_out.new_empty({0});
  if (need_grad_x) {
    const at::Tensor weight =
        dequantize_float(packed, absmax, out_features, cols_in, blocksize).to(grad_out.scalar_type());
    grad_x = at::matmul(grad_out, weight);
  }
  const at::Tensor grad = grad_out.reshape({-1, out_features}).to(lora_b.scalar_type()).mul(scale);
  const at::Tensor inputs = lora_x.reshape({-1, cols_in});
  const at::Tensor grad_hidden = at::mm(grad, lora_b);
  at::Tensor grad_lora_b = at::mm(grad.t(), at::mm(inputs, lora_a.t()));
  at::Tensor grad_lora_a = at::mm(grad_hidden.t(), inputs);
  at::Tensor grad_lora_x = at::mm(grad_hidden, lora_a).reshape(lora_x.sizes());
  return {grad_x, grad_lora_x, grad_lora_a, grad_lora_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(peftplug, CPU, m) {
  m.impl("nf4_dequantize", &nf4_dequantize_cpu);
  m.impl("nf4_lora_linear", &nf4_lora_linear_cpu);
  m.impl("nf4_lora_linear_backward", &nf4_lora_linear_backward_cpu);
}

}  // namespace peftplug::nf4
