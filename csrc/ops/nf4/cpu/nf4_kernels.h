// The NF4 CPU kernels one instruction set provides (isa/nf4_kernels.cpp, compiled once per
// instruction set), over plain arrays. Threads and tensors stay in nf4_cpu.cpp, compiled once.
#pragma once

#include <array>
#include <cstdint>

#include "../../../cpu_capability.h"

namespace peftplug::nf4 {

// The 16 NF4 values (QLoRA, appendix E), as bitsandbytes stores them.
inline constexpr std::array<float, 16> kNF4 = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// The fused product never builds the float weight for at most this many fp32 rows.
inline constexpr int64_t kMaxFusedRows = 16;

struct CpuKernels {
  // out[i - first] = kNF4[code i] * absmax[i / blocksize] for the flat weight indices
  // [first, last); codes are packed two a byte, the first in the high nibble; blocksize is a
  // power of two (check_inputs).
  void (*dequantize)(const uint8_t* packed, const float* absmax, int64_t blocksize, int64_t first,
                     int64_t last, float* out);
  // y[m, n] = sum_k x[m, k] * W[n, k] for m < rows <= kMaxFusedRows and n in [first, last), where
  // W is the (out_features, in_features) NF4 weight; x and y are dense row-major.
  void (*matmul)(const float* x, int64_t rows, int64_t in_features, const uint8_t* packed,
                 const float* absmax, int64_t blocksize, int64_t out_features, int64_t first,
                 int64_t last, float* y);
};

PEFTPLUG_DECLARE_CPU_KERNELS(CpuKernels, kCpuKernels)

}  // namespace peftplug::nf4
