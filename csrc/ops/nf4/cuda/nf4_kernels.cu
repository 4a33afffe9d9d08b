// CUDA kernels of the NF4 ops (see nf4_kernels.cuh for the layout and the contract).
//
// Decode (m <= 16): one warp per output feature streams its 4-bit row once, 32 weights per
// lane per step (one 16-byte load), and multiplies them into every activation row; the LoRA
// term and the bias are added by lane 0, so the output is written once.
// Prefill/training (m > 16): 128x128 output tiles; each K step dequantizes a 128x32 weight
// tile into shared memory next to the activation tile and feeds tensor-core MMA (WMMA
// 16x16x16, sm_80+). LoRA is folded into the same GEMM: [x, h] @ [W, B]^T, so its r extra
// columns run as extra K steps on the tensor cores and the output is written once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "nf4_kernels.cuh"

namespace peftplug::cuda {
namespace {

constexpr int kBlocksize = 64;
constexpr int kMaxGemvRows = 16;

__constant__ float kNF4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

template <typename T>
__device__ __forceinline__ float to_float(T value);
template <>
__device__ __forceinline__ float to_float<float>(float value) { return value; }
template <>
__device__ __forceinline__ float to_float<__half>(__half value) { return __half2float(value); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

template <typename T>
__device__ __forceinline__ T from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) { return value; }
template <>
__device__ __forceinline__ __half from_float<__half>(float value) { return __float2half_rn(value); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// The code table in shared memory: lanes look up different codes, which constant memory
// would serialise.
__device__ __forceinline__ void load_table(float* table) {
  if (threadIdx.x < 16 && threadIdx.y == 0) table[threadIdx.x] = kNF4[threadIdx.x];
  __syncthreads();
}

// Dequantize --------------------------------------------------------------------------------
template <typename T>
__global__ void dequantize_kernel(const uint8_t* __restrict__ packed,
                                  const float* __restrict__ absmax, int64_t numel,
                                  int64_t blocksize, T* __restrict__ out) {
  __shared__ float table[16];
  load_table(table);
  const int64_t bytes = (numel + 1) / 2;
  const int64_t words = (bytes + 3) / 4;  // each thread decodes 4 bytes = 8 weights per step
  const bool aligned = (reinterpret_cast<uintptr_t>(packed) & 3) == 0;
  for (int64_t word = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; word < words;
       word += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint8_t quad[4];
    if (aligned && word * 4 + 3 < bytes) {
      const uint32_t raw = reinterpret_cast<const uint32_t*>(packed)[word];
#pragma unroll
      for (int i = 0; i < 4; ++i) quad[i] = (raw >> (8 * i)) & 0xFF;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) quad[i] = word * 4 + i < bytes ? packed[word * 4 + i] : 0;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t index = word * 8 + j;
      if (index < numel) {
        const int code = (j & 1) ? (quad[j >> 1] & 0xF) : (quad[j >> 1] >> 4);
        out[index] = from_float<T>(table[code] * absmax[index / blocksize]);
      }
    }
  }
}

// Decode GEMV -------------------------------------------------------------------------------
// 16 bytes = 32 weights of one 64-weight block, decoded into registers.
__device__ __forceinline__ void decode32(const uint4 raw, float scale, const float* table,
                                         float* weights) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t byte = (words[i / 4] >> (8 * (i % 4))) & 0xFF;
    weights[2 * i] = table[byte >> 4] * scale;
    weights[2 * i + 1] = table[byte & 0xF] * scale;
  }
}

// Dot product of 32 consecutive activations with 32 decoded weights.
template <typename T>
__device__ __forceinline__ float dot32(const T* __restrict__ x, const float* weights) {
  constexpr int kPerLoad = 16 / sizeof(T);
  float sum = 0.0f;
#pragma unroll
  for (int load = 0; load < 32 / kPerLoad; ++load) {
    const uint4 raw = *reinterpret_cast<const uint4*>(x + load * kPerLoad);
    const T* values = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < kPerLoad; ++j) sum += to_float(values[j]) * weights[load * kPerLoad + j];
  }
  return sum;
}

template <typename T, int kRows>
__global__ void gemv_kernel(Nf4LinearArgs args) {
  __shared__ float table[16];
  load_table(table);
  const int lane = threadIdx.x;
  const int64_t feature = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (feature >= args.n) return;
  const T* x = static_cast<const T*>(args.x);
  const uint8_t* row = args.packed + feature * (args.k / 2);
  const float* scales = args.absmax + feature * (args.k / kBlocksize);
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.0f;
  for (int64_t k0 = lane * 32; k0 < args.k; k0 += 32 * 32) {
    float weights[32];
    decode32(*reinterpret_cast<const uint4*>(row + k0 / 2), scales[k0 / kBlocksize], table,
             weights);
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m < args.m) acc[m] += dot32(x + m * args.k + k0, weights);
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], offset);
  }
  if (lane != 0) return;
  const T* bias = static_cast<const T*>(args.bias);
  const T* hidden = static_cast<const T*>(args.lora_hidden);
  const T* lora_b = static_cast<const T*>(args.lora_b) + feature * args.r;
  T* out = static_cast<T*>(args.out);
  for (int m = 0; m < args.m && m < kRows; ++m) {
    float value = acc[m] + (bias ? to_float(bias[feature]) : 0.0f);
    for (int64_t j = 0; j < args.r; ++j)
      value += to_float(hidden[m * args.r + j]) * to_float(lora_b[j]);
    out[m * args.n + feature] = from_float<T>(value);
  }
}

// Tensor-core GEMM --------------------------------------------------------------------------
namespace wmma = nvcuda::wmma;

constexpr int kTile = 128;    // output tile: kTile x kTile
constexpr int kStep = 32;     // reduction step
constexpr int kPad = 8;       // shared-memory row padding (elements), against bank conflicts
constexpr int kThreads = 256; // 8 warps: 2 along the first output axis, 4 along the second

// Eight consecutive values of `source` (row `row`, columns col..col+7 of a [rows, cols]
// matrix), zero outside it; `vector` loads 16 bytes at once when the row is aligned.
template <typename T>
__device__ __forceinline__ uint4 load8(const T* source, int64_t rows, int64_t cols, int64_t row,
                                       int64_t col, bool vector) {
  uint4 result = make_uint4(0, 0, 0, 0);
  if (row >= rows) return result;
  if (vector && col + 8 <= cols) return *reinterpret_cast<const uint4*>(source + row * cols + col);
  T* values = reinterpret_cast<T*>(&result);
#pragma unroll
  for (int j = 0; j < 8; ++j)
    values[j] = col + j < cols ? source[row * cols + col + j] : from_float<T>(0.0f);
  return result;
}

// Sixteen dequantized weights W[row, col..col+15] (col % 16 == 0, k % 64 == 0), zero past N.
template <typename T>
__device__ __forceinline__ void decode16(const uint8_t* packed, const float* absmax,
                                         const float* table, int64_t n, int64_t k, int64_t row,
                                         int64_t col, T* out) {
  if (row >= n || col >= k) {
#pragma unroll
    for (int j = 0; j < 16; ++j) out[j] = from_float<T>(0.0f);
    return;
  }
  const int64_t first = row * k + col;
  const uint2 raw = *reinterpret_cast<const uint2*>(packed + first / 2);
  const float scale = absmax[first / kBlocksize];
  const uint32_t words[2] = {raw.x, raw.y};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const uint32_t byte = (words[i / 4] >> (8 * (i % 4))) & 0xFF;
    out[2 * i] = from_float<T>(table[byte >> 4] * scale);
    out[2 * i + 1] = from_float<T>(table[byte & 0xF] * scale);
  }
}

// Adds the bias, converts and stores one 16x16 accumulator through the warp's staging tile.
template <typename T>
__device__ __forceinline__ void store_tile(
    const wmma::fragment<wmma::accumulator, 16, 16, 16, float>& acc, float* staging, T* out,
    const T* bias, int64_t rows, int64_t cols, int64_t row0, int64_t col0, int lane) {
  wmma::store_matrix_sync(staging, acc, 16, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < 256; e += 32) {
    const int64_t row = row0 + e / 16;
    const int64_t col = col0 + e % 16;
    if (row < rows && col < cols)
      out[row * cols + col] = from_float<T>(staging[e] + (bias ? to_float(bias[col]) : 0.0f));
  }
  __syncwarp();
}

// out = [x, h] @ [W, B]^T (+ bias): K/kStep weight steps, then ceil(r/kStep) LoRA steps.
template <typename T>
__global__ void __launch_bounds__(kThreads) gemm_kernel(Nf4LinearArgs args) {
  __shared__ __align__(32) T a_tile[kTile][kStep + kPad];
  __shared__ __align__(32) T b_tile[kTile][kStep + kPad];  // b_tile[n][k]: column-major B
  __shared__ __align__(32) float staging[kThreads / 32][16 * 16];
  __shared__ float table[16];
  load_table(table);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int warp_m = warp / 4, warp_n = warp % 4;  // each warp: 64 rows x 32 columns
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const T* x = static_cast<const T*>(args.x);
  const T* hidden = static_cast<const T*>(args.lora_hidden);
  const T* lora_b = static_cast<const T*>(args.lora_b);
  const int64_t weight_steps = args.k / kStep;
  const int64_t steps = weight_steps + (args.r + kStep - 1) / kStep;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t step = 0; step < steps; ++step) {
    const bool weights = step < weight_steps;
    const int64_t k0 = (weights ? step : step - weight_steps) * kStep;
#pragma unroll
    for (int part = 0; part < 2; ++part) {  // activations: 128 x 32, 8 per thread per part
      const int element = (tid + part * kThreads) * 8;
      const int row = element / kStep, col = element % kStep;
      const uint4 values =
          weights ? load8(x, args.m, args.k, m0 + row, k0 + col, true)
                  : load8(hidden, args.m, args.r, m0 + row, k0 + col, (args.r % 8) == 0);
      *reinterpret_cast<uint4*>(&a_tile[row][col]) = values;
    }
    {  // weights: 128 rows x 32, two threads per row, 16 each
      const int row = tid / 2, col = (tid % 2) * 16;
      if (weights) {
        decode16(args.packed, args.absmax, table, args.n, args.k, n0 + row, k0 + col,
                 &b_tile[row][col]);
      } else {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const uint4 values = load8(lora_b, args.n, args.r, n0 + row, k0 + col + 8 * half,
                                     (args.r % 8) == 0);
          *reinterpret_cast<uint4*>(&b_tile[row][col + 8 * half]) = values;
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kStep; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        wmma::load_matrix_sync(a[i], &a_tile[warp_m * 64 + i * 16][kk], kStep + kPad);
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(b[j], &b_tile[warp_n * 32 + j * 16][kk], kStep + kPad);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  T* out = static_cast<T*>(args.out);
  const T* bias = static_cast<const T*>(args.bias);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      store_tile(acc[i][j], staging[warp], out, bias, args.m, args.n,
                 m0 + warp_m * 64 + i * 16, n0 + warp_n * 32 + j * 16, lane);
}

// grad_x = grad_out @ deq(W): the reduction runs over N, so the weight tile is W[n0.., k0..]
// read row-major as the B operand; no transposed copy of the weight is stored.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    input_grad_kernel(const T* __restrict__ grad_out, const uint8_t* __restrict__ packed,
                      const float* __restrict__ absmax, int64_t m, int64_t n, int64_t k,
                      T* __restrict__ grad_x) {
  __shared__ __align__(32) T a_tile[kTile][kStep + kPad];  // grad_out[m0.., n0..n0+31]
  __shared__ __align__(32) T b_tile[kStep][kTile + kPad];  // W[n0..n0+31, k0..k0+127]
  __shared__ __align__(32) float staging[kThreads / 32][16 * 16];
  __shared__ float table[16];
  load_table(table);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int warp_m = warp / 4, warp_k = warp % 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTile;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t n0 = 0; n0 < n; n0 += kStep) {
#pragma unroll
    for (int part = 0; part < 2; ++part) {
      const int element = (tid + part * kThreads) * 8;
      const int row = element / kStep, col = element % kStep;
      *reinterpret_cast<uint4*>(&a_tile[row][col]) =
          load8(grad_out, m, n, m0 + row, n0 + col, (n % 8) == 0);
    }
    {  // 32 weight rows x 128 columns: eight threads per row, 16 weights each
      const int row = tid / 8, col = (tid % 8) * 16;
      decode16(packed, absmax, table, n, k, n0 + row, k0 + col, &b_tile[row][col]);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kStep; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b[2];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        wmma::load_matrix_sync(a[i], &a_tile[warp_m * 64 + i * 16][kk], kStep + kPad);
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(b[j], &b_tile[kk][warp_k * 32 + j * 16], kTile + kPad);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      store_tile<T>(acc[i][j], staging[warp], grad_x, nullptr, m, k,
                    m0 + warp_m * 64 + i * 16, k0 + warp_k * 32 + j * 16, lane);
}

template <typename T>
cudaError_t launch_dequantize(const uint8_t* packed, const float* absmax, int64_t numel,
                              int64_t blocksize, void* out, cudaStream_t stream) {
  const int64_t words = ((numel + 1) / 2 + 3) / 4;
  const int threads = 256;
  const int64_t blocks = (words + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
  dequantize_kernel<T><<<grid, threads, 0, stream>>>(packed, absmax, numel, blocksize,
                                                      static_cast<T*>(out));
  return cudaGetLastError();
}

template <typename T, int kRows>
cudaError_t launch_gemv_rows(const Nf4LinearArgs& args, cudaStream_t stream) {
  const dim3 threads(32, 8);  // eight output features per block
  const dim3 grid(static_cast<unsigned>((args.n + 7) / 8));
  gemv_kernel<T, kRows><<<grid, threads, 0, stream>>>(args);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_gemv(const Nf4LinearArgs& args, cudaStream_t stream) {
  if (args.m <= 1) return launch_gemv_rows<T, 1>(args, stream);
  if (args.m <= 2) return launch_gemv_rows<T, 2>(args, stream);
  if (args.m <= 4) return launch_gemv_rows<T, 4>(args, stream);
  if (args.m <= 8) return launch_gemv_rows<T, 8>(args, stream);
  return launch_gemv_rows<T, kMaxGemvRows>(args, stream);
}

template <typename T>
cudaError_t launch_gemm(const Nf4LinearArgs& args, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((args.n + kTile - 1) / kTile),
                  static_cast<unsigned>((args.m + kTile - 1) / kTile));
  gemm_kernel<T><<<grid, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_input_grad(const void* grad_out, const uint8_t* packed, const float* absmax,
                              int64_t m, int64_t n, int64_t k, void* grad_x,
                              cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((k + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  input_grad_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(grad_out), packed, absmax, m, n, k, static_cast<T*>(grad_x));
  return cudaGetLastError();
}

}  // namespace

bool nf4_fused_supported(int64_t k, int64_t blocksize) {
  return blocksize == kBlocksize && k % kBlocksize == 0;
}

cudaError_t nf4_dequantize(const uint8_t* packed, const float* absmax, int64_t numel,
                           int64_t blocksize, void* out, Dtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat32: return launch_dequantize<float>(packed, absmax, numel, blocksize, out, stream);
    case Dtype::kFloat16: return launch_dequantize<__half>(packed, absmax, numel, blocksize, out, stream);
    case Dtype::kBFloat16:
      return launch_dequantize<__nv_bfloat16>(packed, absmax, numel, blocksize, out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t nf4_lora_linear_forward(const Nf4LinearArgs& args, cudaStream_t stream) {
  if (args.m <= kMaxGemvRows) {
    switch (args.dtype) {
      case Dtype::kFloat32: return launch_gemv<float>(args, stream);
      case Dtype::kFloat16: return launch_gemv<__half>(args, stream);
      case Dtype::kBFloat16: return launch_gemv<__nv_bfloat16>(args, stream);
    }
  }
  switch (args.dtype) {
    case Dtype::kFloat16: return launch_gemm<__half>(args, stream);
    case Dtype::kBFloat16: return launch_gemm<__nv_bfloat16>(args, stream);
    case Dtype::kFloat32: break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t nf4_matmul_input_grad(const void* grad_out, const uint8_t* packed,
                                  const float* absmax, int64_t m, int64_t n, int64_t k,
                                  void* grad_x, Dtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat16:
      return launch_input_grad<__half>(grad_out, packed, absmax, m, n, k, grad_x, stream);
    case Dtype::kBFloat16:
      return launch_input_grad<__nv_bfloat16>(grad_out, packed, absmax, m, n, k, grad_x, stream);
    case Dtype::kFloat32: break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace peftplug::cuda
