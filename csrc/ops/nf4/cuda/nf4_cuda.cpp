// CUDA implementations of the NF4 ops (schemas in peftplug/ops/nf4.py), registered with the
// dispatcher. The kernels (nf4_kernels.cu) take fp16/bf16 activations, K % 64 == 0 and
// blocksize 64; other inputs dequantize on the GPU and use cuBLAS. LoRA's small products
// (h = scale * lora_x @ A^T, and the A/B gradients) are cuBLAS calls: they are O(r/K) of the
// work.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "nf4_kernels.cuh"

namespace peftplug {
namespace {

cuda::Dtype kernel_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return cuda::Dtype::kFloat32;
    case at::kHalf: return cuda::Dtype::kFloat16;
    case at::kBFloat16: return cuda::Dtype::kBFloat16;
    default: TORCH_CHECK(false, "nf4 (CUDA): activations must be float32, float16 or bfloat16, got ", type);
  }
}

void check_weight(const at::Tensor& packed, const at::Tensor& absmax, int64_t numel,
                  int64_t blocksize) {
  TORCH_CHECK(packed.scalar_type() == at::kByte, "nf4: packed must be uint8, got ",
              packed.scalar_type());
  TORCH_CHECK(absmax.scalar_type() == at::kFloat, "nf4: absmax must be float32, got ",
              absmax.scalar_type());
  TORCH_CHECK(packed.numel() == (numel + 1) / 2, "nf4: packed holds ", packed.numel(),
              " bytes, a weight of ", numel, " values needs ", (numel + 1) / 2);
  TORCH_CHECK(absmax.numel() == (numel + blocksize - 1) / blocksize, "nf4: absmax holds ",
              absmax.numel(), " scales, a weight of ", numel, " values in blocks of ", blocksize,
              " needs ", (numel + blocksize - 1) / blocksize);
}

bool aligned16(const at::Tensor& tensor) {
  return reinterpret_cast<uintptr_t>(tensor.data_ptr()) % 16 == 0;
}

void check_launch(cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, "nf4 (CUDA): kernel launch failed: ",
              cudaGetErrorString(error));
}

at::Tensor nf4_dequantize_cuda(const at::Tensor& packed_in, const at::Tensor& absmax_in,
                               at::IntArrayRef shape, int64_t blocksize, at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(packed_in.device());
  int64_t numel = 1;
  for (int64_t size : shape) numel *= size;
  check_weight(packed_in, absmax_in, numel, blocksize);
  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor absmax = absmax_in.contiguous();
  at::Tensor out = at::empty(shape, absmax.options().dtype(dtype));
  check_launch(cuda::nf4_dequantize(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), numel,
                                    blocksize, out.data_ptr(), kernel_dtype(dtype),
                                    c10::cuda::getCurrentCUDAStream()));
  return out;
}

// scale * lora_x @ A^T in the activation dtype, [M, r]; empty when r == 0.
at::Tensor lora_hidden(const at::Tensor& lora_x, const at::Tensor& lora_a, double scale,
                       int64_t rows, at::ScalarType dtype) {
  const at::Tensor inputs = lora_x.reshape({rows, lora_x.size(-1)}).to(lora_a.scalar_type());
  return (at::linear(inputs, lora_a) * scale).to(dtype).contiguous();
}

at::Tensor nf4_lora_linear_cuda(const at::Tensor& x_in, const at::Tensor& packed,
                                const at::Tensor& absmax, int64_t out_features, int64_t blocksize,
                                const std::optional<at::Tensor>& bias, const at::Tensor& lora_x,
                                const at::Tensor& lora_a, const at::Tensor& lora_b, double scale) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t in_features = x_in.size(-1);
  const int64_t rows = in_features ? x_in.numel() / in_features : 0;
  check_weight(packed, absmax, out_features * in_features, blocksize);
  const at::ScalarType dtype = x_in.scalar_type();
  const bool tensor_cores = dtype == at::kHalf || dtype == at::kBFloat16;
  const bool fused = cuda::nf4_fused_supported(in_features, blocksize) && rows > 0 &&
                     (rows <= 16 || tensor_cores) && aligned16(packed);
  std::vector<int64_t> out_shape(x_in.sizes().begin(), x_in.sizes().end() - 1);
  out_shape.push_back(out_features);
  if (!fused) {
    const at::Tensor weight =
        nf4_dequantize_cuda(packed, absmax, {out_features, in_features}, blocksize, dtype);
    const at::Tensor update = at::linear(at::linear(lora_x, lora_a), lora_b) * scale;
    return at::linear(x_in, weight, bias) + update.to(dtype);
  }
  const at::Tensor x = x_in.reshape({rows, in_features}).contiguous();
  const int64_t rank = lora_a.size(0);
  const at::Tensor hidden = rank ? lora_hidden(lora_x, lora_a, scale, rows, dtype) : at::Tensor();
  const at::Tensor b = rank ? lora_b.to(dtype).contiguous() : at::Tensor();
  const at::Tensor bias_values = bias ? bias->to(dtype).contiguous() : at::Tensor();
  const at::Tensor scales = absmax.contiguous();
  at::Tensor out = at::empty({rows, out_features}, x.options());
  cuda::Nf4LinearArgs args{};
  args.x = x.data_ptr();
  args.packed = packed.data_ptr<uint8_t>();
  args.absmax = scales.data_ptr<float>();
  args.bias = bias ? bias_values.data_ptr() : nullptr;
  args.lora_hidden = rank ? hidden.data_ptr() : nullptr;
  args.lora_b = rank ? b.data_ptr() : nullptr;
  args.m = rows;
  args.n = out_features;
  args.k = in_features;
  args.r = rank;
  args.out = out.data_ptr();
  args.dtype = kernel_dtype(dtype);
  check_launch(cuda::nf4_lora_linear_forward(args, c10::cuda::getCurrentCUDAStream()));
  return out.view(out_shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nf4_lora_linear_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& packed, const at::Tensor& absmax,
    int64_t out_features, int64_t blocksize, const at::Tensor& lora_x, const at::Tensor& lora_a,
    const at::Tensor& lora_b, double scale, bool need_grad_x) {
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t in_features = lora_x.size(-1);
  const int64_t rows = grad_out.numel() / out_features;
  check_weight(packed, absmax, out_features * in_features, blocksize);
  const at::ScalarType dtype = grad_out.scalar_type();
  at::Tensor grad_x = grad_out.new_empty({0});
  if (need_grad_x) {
    std::vector<int64_t> shape(grad_out.sizes().begin(), grad_out.sizes().end() - 1);
    shape.push_back(in_features);
    const bool fused = cuda::nf4_fused_supported(in_features, blocksize) &&
                       (dtype == at::kHalf || dtype == at::kBFloat16) && aligned16(packed) &&
                       rows > 0;
    if (fused) {
      const at::Tensor grad = grad_out.reshape({rows, out_features}).contiguous();
      grad_x = at::empty({rows, in_features}, grad.options());
      const at::Tensor scales = absmax.contiguous();
      check_launch(cuda::nf4_matmul_input_grad(grad.data_ptr(), packed.data_ptr<uint8_t>(),
                                               scales.data_ptr<float>(), rows, out_features,
                                               in_features, grad_x.data_ptr(),
                                               kernel_dtype(dtype),
                                               c10::cuda::getCurrentCUDAStream()));
      grad_x = grad_x.view(shape);
    } else {
      const at::Tensor weight =
          nf4_dequantize_cuda(packed, absmax, {out_features, in_features}, blocksize, dtype);
      grad_x = at::matmul(grad_out, weight);
    }
  }
  const at::Tensor grad = grad_out.reshape({rows, out_features}).to(lora_b.scalar_type()) * scale;
  const at::Tensor inputs = lora_x.reshape({rows, in_features}).to(lora_a.scalar_type());
  const at::Tensor grad_hidden = at::matmul(grad, lora_b);
  const at::Tensor grad_b = at::matmul(grad.t(), at::linear(inputs, lora_a));
  const at::Tensor grad_a = at::matmul(grad_hidden.t(), inputs);
  const at::Tensor grad_lora_x =
      at::matmul(grad_hidden, lora_a).reshape(lora_x.sizes()).to(lora_x.scalar_type());
  return {grad_x, grad_lora_x, grad_a, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(peftplug, CUDA, m) {
  m.impl("nf4_dequantize", &nf4_dequantize_cuda);
  m.impl("nf4_lora_linear", &nf4_lora_linear_cuda);
  m.impl("nf4_lora_linear_backward", &nf4_lora_linear_backward_cuda);
}

}  // namespace peftplug
