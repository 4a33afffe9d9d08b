// The row loops of the prefix_attention CPU kernels, compiled once per instruction set
// (setup.py) and written on at::vec::Vectorized<T>; exp is Sleef's (1 ulp), as ATen's softmax.
// Keep this file's includes to the vector headers (see isa/nf4_kernels.cpp).
#include "../prefix_attention_kernels.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace peftplug::prefix_attention {
namespace CPU_CAPABILITY {
namespace {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// out[j] = exp(in[j] - shift) for j < count; returns their sum.
template <typename T>
T exp_shifted(const T* in, T* out, int64_t count, T shift) {
  constexpr int64_t lanes = Vec<T>::size();
  const Vec<T> offset(shift);
  Vec<T> sums(T(0));
  int64_t j = 0;
  for (; j + lanes <= count; j += lanes) {
    const Vec<T> values = (Vec<T>::loadu(in + j) - offset).exp();
    values.store(out + j);
    sums = sums + values;
  }
  T total = at::vec::vec_reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, sums);
  for (; j < count; ++j) total += (out[j] = std::exp(in[j] - shift));
  return total;
}

template <typename T>
T row_max(const T* values, int64_t count, T start) {
  constexpr int64_t lanes = Vec<T>::size();
  Vec<T> tops(start);
  int64_t j = 0;
  for (; j + lanes <= count; j += lanes) tops = at::vec::maximum(tops, Vec<T>::loadu(values + j));
  T top = at::vec::vec_reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return at::vec::maximum(a, b); }, tops);
  for (; j < count; ++j) top = std::max(top, values[j]);
  return top;
}

template <typename T>
void merge_softmax(T* scores, int64_t prefix, const T* key_lse, T* lse, T* key_weight, int64_t first, int64_t last) {
  const T negative_infinity = -std::numeric_limits<T>::infinity();
  for (int64_t row = first; row < last; ++row) {
    T* row_scores = scores + row * prefix;
    const T top = row_max(row_scores, prefix, key_lse[row]);
    if (top == negative_infinity) {  // attends nothing: output 0, as SDPA gives
      lse[row] = negative_infinity;
      key_weight[row] = 0;
      for (int64_t j = 0; j < prefix; ++j) row_scores[j] = 0;
      continue;
    }
    const T key_share = std::exp(key_lse[row] - top);
    const T total = key_share + exp_shifted(row_scores, row_scores, prefix, top);
    lse[row] = top + std::log(total);
    const T inverse = T(1) / total;  // probabilities = exp(s - top) / total, as ATen's softmax
    key_weight[row] = key_share * inverse;
    constexpr int64_t lanes = Vec<T>::size();
    int64_t j = 0;
    for (; j + lanes <= prefix; j += lanes) (Vec<T>::loadu(row_scores + j) * Vec<T>(inverse)).store(row_scores + j);
    for (; j < prefix; ++j) row_scores[j] *= inverse;
  }
}

template <typename T>
void softmax_backward(T* scores, T* grad_probs, int64_t prefix, const T* lse, const T* row_terms, T scale,
                      int64_t first, int64_t last) {
  constexpr int64_t lanes = Vec<T>::size();
  const Vec<T> scales(scale);
  for (int64_t row = first; row < last; ++row) {
    T* p = scores + row * prefix;
    T* g = grad_probs + row * prefix;
    if (std::isinf(lse[row])) {
      for (int64_t j = 0; j < prefix; ++j) p[j] = g[j] = 0;
      continue;
    }
    exp_shifted(p, p, prefix, lse[row]);
    const Vec<T> term(row_terms[row]);
    int64_t j = 0;
    for (; j + lanes <= prefix; j += lanes)
      (Vec<T>::loadu(p + j) * (Vec<T>::loadu(g + j) - term) * scales).store(g + j);
    for (; j < prefix; ++j) g[j] = p[j] * (g[j] - row_terms[row]) * scale;
  }
}

template <typename T>
constexpr RowKernels<T> row_kernels() {
  return {&merge_softmax<T>, &softmax_backward<T>};
}

}  // namespace

extern const CpuKernels kCpuKernels{row_kernels<float>(), row_kernels<double>()};

}  // namespace CPU_CAPABILITY
}  // namespace peftplug::prefix_attention
