// CPU kernels of the NF4 ops (schemas in peftplug/ops/nf4.py).
//
// nf4_lora_linear at M <= 16 fp32 rows never builds the float weight: each thread takes a
// range of output features, decodes 16 weights at a time straight into registers (one AVX-512
// table lookup: the 16 NF4 values fit one register) and multiplies them into up to 8 input
// rows held in registers, two output features at a time, so the weight is read at 4 bits. Larger M and other dtypes dequantize and use
// the BLAS GEMM, whose cost then dwarfs the dequantization.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cstdint>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define PEFTPLUG_NF4_AVX512 1
#endif

namespace peftplug {
namespace {

constexpr std::array<float, 16> kNF4 = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

constexpr int64_t kMaxFusedRows = 16;

inline float nf4_value(const uint8_t* packed, int64_t index) {
  const uint8_t byte = packed[index >> 1];
  return kNF4[(index & 1) ? (byte & 0xF) : (byte >> 4)];
}

void check_inputs(const at::Tensor& packed, const at::Tensor& absmax) {
  TORCH_CHECK(packed.scalar_type() == at::kByte, "nf4: packed must be uint8");
  TORCH_CHECK(absmax.scalar_type() == at::kFloat, "nf4: absmax must be float32");
}

#ifdef PEFTPLUG_NF4_AVX512
// 16 consecutive weights starting at an even index: 8 bytes -> 16 nibbles (high first) -> values.
inline __m512 decode16(const uint8_t* bytes, __m512 table) {
  const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes));
  const __m128i wide = _mm_cvtepu8_epi16(raw);
  const __m128i high = _mm_srli_epi16(wide, 4);
  const __m128i low = _mm_and_si128(wide, _mm_set1_epi16(0xF));
  const __m128i pairs = _mm_or_si128(high, _mm_slli_epi16(low, 8));  // bytes: h0 l0 h1 l1 ...
  return _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(pairs), table);
}
#endif

// Dense (rows, cols) float32 weight, decoded block by block in parallel.
at::Tensor dequantize_float(const at::Tensor& packed_in, const at::Tensor& absmax_in, int64_t rows,
                            int64_t cols, int64_t blocksize) {
  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor absmax = absmax_in.contiguous();
  at::Tensor out = at::empty({rows, cols}, absmax.options());
  const int64_t numel = rows * cols;
  const uint8_t* codes = packed.data_ptr<uint8_t>();
  const float* scales = absmax.data_ptr<float>();
  float* result = out.data_ptr<float>();
  const int64_t blocks = (numel + blocksize - 1) / blocksize;
  at::parallel_for(0, blocks, 64, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const float scale = scales[block];
      const int64_t end = std::min(numel, (block + 1) * blocksize);
      int64_t i = block * blocksize;
#ifdef PEFTPLUG_NF4_AVX512
      const __m512 table = _mm512_loadu_ps(kNF4.data());
      for (; i + 16 <= end; i += 16)  // blocksize is a multiple of 16, so i stays even
        _mm512_storeu_ps(result + i, _mm512_mul_ps(decode16(codes + (i >> 1), table), _mm512_set1_ps(scale)));
#endif
      for (; i < end; ++i) result[i] = nf4_value(codes, i) * scale;
    }
  });
  return out;
}

at::Tensor nf4_dequantize_cpu(const at::Tensor& packed, const at::Tensor& absmax,
                              at::IntArrayRef shape, int64_t blocksize, at::ScalarType dtype) {
  check_inputs(packed, absmax);
  int64_t numel = 1;
  for (int64_t size : shape) numel *= size;
  return dequantize_float(packed, absmax, 1, numel, blocksize).to(dtype).reshape(shape);
}


#ifdef PEFTPLUG_NF4_AVX512
// ROWS input rows times COLS consecutive output features from `n`, all in registers: each
// decoded weight vector is used ROWS times and each input vector COLS times.
template <int ROWS, int COLS>
void tile_avx512(const float* x, int64_t cols_in, const uint8_t* codes, const float* scales, int shift,
                 int64_t n, int64_t out_features, float* y) {
  const __m512 table = _mm512_loadu_ps(kNF4.data());
  __m512 acc[ROWS][COLS];
  for (int m = 0; m < ROWS; ++m)
    for (int c = 0; c < COLS; ++c) acc[m][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < cols_in; k += 16) {
    __m512 weight[COLS];
    for (int c = 0; c < COLS; ++c) {
      const int64_t index = (n + c) * cols_in + k;  // even; 16 values never straddle a block
      weight[c] = _mm512_mul_ps(decode16(codes + (index >> 1), table), _mm512_set1_ps(scales[index >> shift]));
    }
    for (int m = 0; m < ROWS; ++m) {
      const __m512 input = _mm512_loadu_ps(x + m * cols_in + k);
      for (int c = 0; c < COLS; ++c) acc[m][c] = _mm512_fmadd_ps(input, weight[c], acc[m][c]);
    }
  }
  for (int m = 0; m < ROWS; ++m)
    for (int c = 0; c < COLS; ++c) y[m * out_features + n + c] = _mm512_reduce_add_ps(acc[m][c]);
}

constexpr int64_t kTileRows = 8;  // 8 x 2 accumulators + 2 weights + table + input: 20 registers

template <int COLS>
void tile_for_rows(int64_t rows, const float* x, int64_t cols_in, const uint8_t* codes, const float* scales,
                   int shift, int64_t n, int64_t out_features, float* y) {
  switch (rows) {
#define PEFTPLUG_NF4_TILE(R) \
  case R:                    \
    return tile_avx512<R, COLS>(x, cols_in, codes, scales, shift, n, out_features, y);
    PEFTPLUG_NF4_TILE(1) PEFTPLUG_NF4_TILE(2) PEFTPLUG_NF4_TILE(3) PEFTPLUG_NF4_TILE(4)
    PEFTPLUG_NF4_TILE(5) PEFTPLUG_NF4_TILE(6) PEFTPLUG_NF4_TILE(7) PEFTPLUG_NF4_TILE(8)
#undef PEFTPLUG_NF4_TILE
  }
}
#endif

// y[m, n] = sum_k x[m, k] * W[n, k] for M <= 16 rows, decoding W on the fly.
void fused_small_m(const float* x, int64_t rows, int64_t cols_in, const uint8_t* codes,
                   const float* scales, int64_t blocksize, int64_t out_features, float* y) {
#ifdef PEFTPLUG_NF4_AVX512
  if (cols_in % 16 == 0) {
    const int shift = __builtin_ctzll(static_cast<unsigned long long>(blocksize));  // a power of 2
    const int64_t pairs = (out_features + 1) / 2;
    at::parallel_for(0, pairs, 4, [&](int64_t first, int64_t last) {
      for (int64_t pair = first; pair < last; ++pair) {
        const int64_t n = 2 * pair;
        for (int64_t m = 0; m < rows; m += kTileRows) {
          const int64_t count = std::min(kTileRows, rows - m);
          const float* input = x + m * cols_in;
          float* output = y + m * out_features;
          if (n + 1 < out_features)
            tile_for_rows<2>(count, input, cols_in, codes, scales, shift, n, out_features, output);
          else
            tile_for_rows<1>(count, input, cols_in, codes, scales, shift, n, out_features, output);
        }
      }
    });
    return;
  }
#endif
  at::parallel_for(0, out_features, 8, [&](int64_t first, int64_t last) {
    for (int64_t n = first; n < last; ++n) {
      std::array<float, kMaxFusedRows> sums{};
      for (int64_t k = 0; k < cols_in; ++k) {
        const int64_t index = n * cols_in + k;
        const float weight = nf4_value(codes, index) * scales[index / blocksize];
        for (int64_t m = 0; m < rows; ++m) sums[m] += x[m * cols_in + k] * weight;
      }
      for (int64_t m = 0; m < rows; ++m) y[m * out_features + n] = sums[m];
    }
  });
}

at::Tensor nf4_lora_linear_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& absmax,
                               int64_t out_features, int64_t blocksize,
                               const std::optional<at::Tensor>& bias, const at::Tensor& lora_x,
                               const at::Tensor& lora_a, const at::Tensor& lora_b, double scale) {
  check_inputs(packed, absmax);
  const int64_t cols_in = x.size(-1);
  const at::Tensor x2 = x.reshape({-1, cols_in}).contiguous();
  const int64_t rows = x2.size(0);
  at::Tensor y;
  if (x.scalar_type() == at::kFloat && rows <= kMaxFusedRows) {
    y = at::empty({rows, out_features}, x2.options());
    const at::Tensor codes = packed.contiguous();
    const at::Tensor scales = absmax.contiguous();
    fused_small_m(x2.data_ptr<float>(), rows, cols_in, codes.data_ptr<uint8_t>(),
                  scales.data_ptr<float>(), blocksize, out_features, y.data_ptr<float>());
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
  check_inputs(packed, absmax);
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

bool nf4_cpu_is_vectorised() {
#ifdef PEFTPLUG_NF4_AVX512
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY_IMPL(peftplug, CPU, m) {
  m.impl("nf4_dequantize", &nf4_dequantize_cpu);
  m.impl("nf4_lora_linear", &nf4_lora_linear_cpu);
  m.impl("nf4_lora_linear_backward", &nf4_lora_linear_backward_cpu);
}

}  // namespace peftplug
