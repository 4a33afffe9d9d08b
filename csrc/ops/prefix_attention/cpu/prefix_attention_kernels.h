// The row loops of the prefix_attention CPU kernels one instruction set provides
// (isa/prefix_attention_kernels.cpp, compiled once per instruction set), over plain arrays.
// Threads and tensors stay in prefix_attention_cpu.cpp, compiled once.
#pragma once

#include <cstdint>

#include "../../../cpu_capability.h"

namespace peftplug::prefix_attention {

template <typename T>
struct RowKernels {
  // Rows [first, last) of scores [rows, prefix], in place: the prefix's scaled scores become its
  // probabilities under one softmax with the keys, whose log-sum-exp is key_lse[row]; writes
  // the merged log-sum-exp and the keys' weight exp(key_lse - lse). A row that attends nothing
  // gets probabilities 0, weight 0 and log-sum-exp -inf.
  void (*merge_softmax)(T* scores, int64_t prefix, const T* key_lse, T* lse, T* key_weight, int64_t first,
                        int64_t last);
  // Rows [first, last), in place: scores -> probabilities exp(s - lse) (0 where lse is infinite)
  // and grad_probs -> grad_scores = P * (dP - row_terms) * scale.
  void (*softmax_backward)(T* scores, T* grad_probs, int64_t prefix, const T* lse, const T* row_terms,
                           T scale, int64_t first, int64_t last);
};

struct CpuKernels {
  RowKernels<float> fp32;
  RowKernels<double> fp64;
};

PEFTPLUG_DECLARE_CPU_KERNELS(CpuKernels, kCpuKernels)

}  // namespace peftplug::prefix_attention
