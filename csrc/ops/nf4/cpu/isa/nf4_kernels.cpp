// NF4 CPU kernels, compiled once per instruction set (setup.py gives this file CPU_CAPABILITY and
// the matching -m flags). Everything but the 4-bit table lookup is written on
// at::vec::Vectorized<float>, whose width and intrinsics follow CPU_CAPABILITY.
//
// matmul copies the few input rows once, chunk by chunk, then decodes a strip of a few output
// features' weights (kChunk inputs long) into a small buffer that stays in L1 and multiplies it
// into every input row in register tiles of kTileRows x kTileCols vector accumulators; partial
// sums live in memory between strips, so each is reduced across lanes once. The weight is read
// at 4 bits and decoded once per call. On AVX2 and AVX-512 the strips are decoded in "word
// order" (below), which needs no shuffle but the table lookup, and the input copy is permuted
// the same way, which leaves every dot product as it was.
//
// Keep this file's includes to the vector headers: an inline function of a common header
// compiled here with AVX flags could otherwise be picked by the linker for every caller.
#include "../nf4_kernels.h"

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <memory>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#define PEFTPLUG_NF4_WORD_ORDER 1  // a vector table lookup: decode in word order (below)
#endif

namespace peftplug::nf4 {
namespace CPU_CAPABILITY {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
constexpr int64_t kChunk = 256;  // inputs per strip: 16 rows of x and kTileCols weight strips fit L1
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kTileRows = 8;  // 8 x 3 accumulators + 3 weights + 1 input of 32 registers
constexpr int kTileCols = 3;
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int kTileRows = 4;  // 4 x 3 accumulators + 3 weights of 16 registers (inputs from L1)
constexpr int kTileCols = 3;
#else
constexpr int kTileRows = 4;
constexpr int kTileCols = 2;
#endif

// 32 weights from 16 bytes (high nibble first), times their block's absmax, into out[0, 32).
// Weight groups of 32 that start at a multiple of 32 never straddle a block (blocks are 32 to
// 4096 weights), so one absmax serves the group.
#if defined(CPU_CAPABILITY_AVX512)
// The 16 NF4 values fill one register: one permutexvar per 16 weights is the table lookup.
inline void decode32(const uint8_t* bytes, float absmax, float* out) {
  const __m512 table = _mm512_loadu_ps(kNF4.data());
  const __m512 scale = _mm512_set1_ps(absmax);
  for (int half = 0; half < 2; ++half) {
    const __m128i wide = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes + 8 * half)));
    const __m128i high = _mm_srli_epi16(wide, 4);
    const __m128i low = _mm_and_si128(wide, _mm_set1_epi16(0xF));
    const __m128i codes = _mm_or_si128(high, _mm_slli_epi16(low, 8));  // bytes: h0 l0 h1 l1 ...
    _mm512_storeu_ps(out + 16 * half,
                     _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes), table), scale));
  }
}
#elif defined(CPU_CAPABILITY_AVX2)
// Each of the four bytes of the 16 NF4 floats is one 16-entry byte table: four pshufb look them
// up for 32 codes at once, and two rounds of unpacking reassemble the floats.
// The bits of a float at compile time: std::bit_cast is C++20, and torch 2.11 builds extensions
// as C++17, so the compiler builtin behind it (GCC >= 11, Clang, MSVC) is used directly.
constexpr uint32_t float_bits(float value) { return __builtin_bit_cast(uint32_t, value); }

constexpr std::array<std::array<uint8_t, 16>, 4> byte_planes() {
  std::array<std::array<uint8_t, 16>, 4> planes{};
  for (int code = 0; code < 16; ++code)
    for (int plane = 0; plane < 4; ++plane)
      planes[plane][code] = static_cast<uint8_t>(float_bits(kNF4[code]) >> (8 * plane));
  return planes;
}
alignas(16) constexpr std::array<std::array<uint8_t, 16>, 4> kBytePlanes = byte_planes();

inline void decode32(const uint8_t* bytes, float absmax, float* out) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __m128i nibble = _mm_set1_epi8(0xF);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble), low = _mm_and_si128(raw, nibble);
  // codes 0-7 and 16-23 in the low 128-bit lane, 8-15 and 24-31 in the high one, in groups of
  // four: the in-lane unpacks below then leave the floats in order
  const __m256i codes = _mm256_permutevar8x32_epi32(
      _mm256_set_m128i(_mm_unpackhi_epi8(high, low), _mm_unpacklo_epi8(high, low)),
      _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  std::array<__m256i, 4> plane;
  for (int p = 0; p < 4; ++p)
    plane[p] = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kBytePlanes[p].data()))), codes);
  const __m256i low_pairs[2] = {_mm256_unpacklo_epi8(plane[0], plane[1]), _mm256_unpackhi_epi8(plane[0], plane[1])};
  const __m256i high_pairs[2] = {_mm256_unpacklo_epi8(plane[2], plane[3]), _mm256_unpackhi_epi8(plane[2], plane[3])};
  const __m256 scale = _mm256_set1_ps(absmax);
  for (int half = 0; half < 2; ++half) {
    const __m256i first = _mm256_unpacklo_epi16(low_pairs[half], high_pairs[half]);
    const __m256i second = _mm256_unpackhi_epi16(low_pairs[half], high_pairs[half]);
    _mm256_storeu_ps(out + 16 * half, _mm256_mul_ps(_mm256_castsi256_ps(first), scale));
    _mm256_storeu_ps(out + 16 * half + 8, _mm256_mul_ps(_mm256_castsi256_ps(second), scale));
  }
}
#else
inline void decode32(const uint8_t* bytes, float absmax, float* out) {
  for (int i = 0; i < 16; ++i) {
    out[2 * i] = kNF4[bytes[i] >> 4] * absmax;
    out[2 * i + 1] = kNF4[bytes[i] & 0xF] * absmax;
  }
}
#endif

constexpr int64_t kUnit = 8 * kLanes;
static_assert(kChunk % kUnit == 0);

#ifdef PEFTPLUG_NF4_WORD_ORDER
// Word order: a unit of kUnit = 8 * kLanes weights is read as kLanes little-endian 32-bit words
// of 8 codes each, and decoded vector j holds code j (bits 4j to 4j + 3) of every word, so lane
// i holds weight 8 i + kCodeOffset[j] of the unit (the high nibble of a byte comes first).
constexpr std::array<int64_t, 8> kCodeOffset = {1, 0, 3, 2, 5, 4, 7, 6};

// The absmax of each lane's 8 weights: one block for the unit, or (blocks of 32 or 64 weights
// under AVX-512's 128-weight units) a few.
Vec unit_scales(const float* absmax, int shift, int64_t index) {
  if ((int64_t{1} << shift) >= kUnit) return Vec(absmax[index >> shift]);
  alignas(64) float scales[kLanes];
  for (int64_t lane = 0; lane < kLanes; ++lane) scales[lane] = absmax[(index + 8 * lane) >> shift];
  return Vec::loadu(scales);
}

// The code values of one unit, one code of every word at a time.
class UnitDecoder {
 public:
#if defined(CPU_CAPABILITY_AVX512)
  explicit UnitDecoder(const uint8_t* bytes)
      : words_(_mm512_loadu_si512(bytes)), table_(_mm512_loadu_ps(kNF4.data())) {}
  Vec code(int j) const {  // permutexvar reads the low 4 bits of each word
    return Vec(_mm512_permutexvar_ps(_mm512_srli_epi32(words_, 4 * j), table_));
  }

 private:
  __m512i words_;
  __m512 table_;
#else
  explicit UnitDecoder(const uint8_t* bytes)
      : words_(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes))),
        low_(_mm256_loadu_ps(kNF4.data())),
        high_(_mm256_loadu_ps(kNF4.data() + 8)) {}
  Vec code(int j) const {  // permutevar8x32 reads the low 3 bits; bit 3, moved to the sign, picks the half
    const __m256i shifted = _mm256_srli_epi32(words_, 4 * j);
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(words_, 28 - 4 * j));
    return Vec(_mm256_blendv_ps(_mm256_permutevar8x32_ps(low_, shifted), _mm256_permutevar8x32_ps(high_, shifted),
                                upper));
  }

 private:
  __m256i words_;
  __m256 low_, high_;
#endif
};

// The kUnit weights from flat index `index` (a multiple of kUnit) into out[0, kUnit), in word order.
void decode_unit(const uint8_t* packed, const float* absmax, int shift, int64_t index, float* out) {
  const Vec scale = unit_scales(absmax, shift, index);
  const UnitDecoder decoder(packed + (index >> 1));
  for (int code = 0; code < 8; ++code) (decoder.code(code) * scale).store(out + code * kLanes);
}
#endif

float weight_at(const uint8_t* packed, const float* absmax, int shift, int64_t index) {
  const uint8_t byte = packed[index >> 1];
  return kNF4[(index & 1) ? (byte & 0xF) : (byte >> 4)] * absmax[index >> shift];
}

void dequantize(const uint8_t* packed, const float* absmax, int64_t blocksize, int64_t first,
                int64_t last, float* out) {
  const int shift = __builtin_ctzll(static_cast<unsigned long long>(blocksize));  // a power of 2
  int64_t index = first;
  for (const int64_t aligned = (first + 31) & ~int64_t{31}; index < last && index < aligned; ++index)
    *out++ = weight_at(packed, absmax, shift, index);
  for (; index + 32 <= last; index += 32, out += 32) decode32(packed + (index >> 1), absmax[index >> shift], out);
  for (; index < last; ++index) *out++ = weight_at(packed, absmax, shift, index);
}

// sums[m * stride + c] += x[m, :count] * weights[c, :count] lane by lane, for ROWS rows (kChunk
// apart) and COLS weight strips (kChunk apart); count is a multiple of the vector width.
template <int ROWS, int COLS>
void tile(const float* x, const float* weights, int64_t count, Vec* sums, int64_t stride) {
  Vec acc[ROWS][COLS];
  for (int m = 0; m < ROWS; ++m)
    for (int c = 0; c < COLS; ++c) acc[m][c] = sums[m * stride + c];
  for (int64_t k = 0; k < count; k += kLanes) {
    Vec weight[COLS];
    for (int c = 0; c < COLS; ++c) weight[c] = Vec::loadu(weights + c * kChunk + k);
    for (int m = 0; m < ROWS; ++m) {
      const Vec input = Vec::loadu(x + m * kChunk + k);
      for (int c = 0; c < COLS; ++c) acc[m][c] = at::vec::fmadd(input, weight[c], acc[m][c]);
    }
  }
  for (int m = 0; m < ROWS; ++m)
    for (int c = 0; c < COLS; ++c) sums[m * stride + c] = acc[m][c];
}

// tile<rows, COLS> for a run-time rows in [1, ROWS].
template <int ROWS, int COLS>
void tile_of_rows(int rows, const float* x, const float* weights, int64_t count, Vec* sums, int64_t stride) {
  if (rows == ROWS) return tile<ROWS, COLS>(x, weights, count, sums, stride);
  if constexpr (ROWS > 1) tile_of_rows<ROWS - 1, COLS>(rows, x, weights, count, sums, stride);
}

void tile_of(int rows, int cols, const float* x, const float* weights, int64_t count, Vec* sums, int64_t stride) {
  static_assert(kTileCols == 2 || kTileCols == 3);
  if (cols == 3) return tile_of_rows<kTileRows, kTileCols>(rows, x, weights, count, sums, stride);
  if (cols == 2) return tile_of_rows<kTileRows, 2>(rows, x, weights, count, sums, stride);
  tile_of_rows<kTileRows, 1>(rows, x, weights, count, sums, stride);
}

float lane_sum(const Vec& vector) {
  alignas(64) float lanes[kLanes];
  vector.store(lanes);
  float total = 0;
  for (int64_t lane = 0; lane < kLanes; ++lane) total += lanes[lane];
  return total;
}

// rows x in_features inputs -> [chunk][row][kChunk], each unit in word order when word_order.
void copy_inputs(const float* x, int64_t rows, int64_t in_features, bool word_order, float* out) {
  for (int64_t k = 0; k < in_features; k += kChunk) {
    const int64_t count = in_features - k < kChunk ? in_features - k : kChunk;
    for (int64_t m = 0; m < rows; ++m, out += kChunk) {
      const float* row = x + m * in_features + k;
      if (!word_order) {
        for (int64_t i = 0; i < count; ++i) out[i] = row[i];
        continue;
      }
#ifdef PEFTPLUG_NF4_WORD_ORDER
      for (int64_t unit = 0; unit < count; unit += kUnit)
        for (int64_t code = 0; code < 8; ++code)
          for (int64_t lane = 0; lane < kLanes; ++lane)
            out[unit + code * kLanes + lane] = row[unit + 8 * lane + kCodeOffset[code]];
#endif
    }
  }
}

#ifdef PEFTPLUG_NF4_WORD_ORDER
// ROWS <= kRegisterRows rows (of `rows` in the input copy) in word order, feature by feature:
// each decoded weight vector goes from the table lookup straight into every row's accumulator,
// never through memory. For one or two full passes of kRegisterRows rows this beats the tiles
// even though it decodes the weight once per pass.
constexpr int kRegisterRows = 4;

template <int ROWS>
void matmul_in_registers(const float* inputs, int64_t rows, int64_t in_features, const uint8_t* packed,
                         const float* absmax, int shift, int64_t out_features, int64_t first, int64_t last,
                         float* y) {
  for (int64_t feature = first; feature < last; ++feature) {
    Vec acc[ROWS];
    for (int m = 0; m < ROWS; ++m) acc[m] = Vec(0.0f);
    for (int64_t k = 0; k < in_features; k += kUnit) {
      const float* x = inputs + (k / kChunk) * rows * kChunk + k % kChunk;
      const int64_t index = feature * in_features + k;
      const UnitDecoder decoder(packed + (index >> 1));
      Vec unit[ROWS];  // unscaled: each lane's 8 weights share one absmax, applied once below
      for (int m = 0; m < ROWS; ++m) unit[m] = Vec(0.0f);
      for (int code = 0; code < 8; ++code) {
        const Vec values = decoder.code(code);
        for (int m = 0; m < ROWS; ++m)
          unit[m] = at::vec::fmadd(Vec::loadu(x + m * kChunk + code * kLanes), values, unit[m]);
      }
      const Vec scale = unit_scales(absmax, shift, index);
      for (int m = 0; m < ROWS; ++m) acc[m] = at::vec::fmadd(unit[m], scale, acc[m]);
    }
    for (int m = 0; m < ROWS; ++m) y[m * out_features + feature] = lane_sum(acc[m]);
  }
}
#endif

void matmul(const float* x, int64_t rows, int64_t in_features, const uint8_t* packed, const float* absmax,
            int64_t blocksize, int64_t out_features, int64_t first, int64_t last, float* y) {
  [[maybe_unused]] const int shift = __builtin_ctzll(static_cast<unsigned long long>(blocksize));
#ifdef PEFTPLUG_NF4_WORD_ORDER
  const bool word_order = in_features % kUnit == 0;  // then every strip is whole units
#else
  constexpr bool word_order = false;
#endif
  const int64_t chunks = (in_features + kChunk - 1) / kChunk;
  const std::unique_ptr<float[]> inputs(new float[chunks * rows * kChunk]);
  copy_inputs(x, rows, in_features, word_order, inputs.get());
#ifdef PEFTPLUG_NF4_WORD_ORDER
  if (word_order && (rows <= kRegisterRows || rows == 2 * kRegisterRows)) {
    constexpr std::array<decltype(&matmul_in_registers<1>), kRegisterRows> by_rows = {
        &matmul_in_registers<1>, &matmul_in_registers<2>, &matmul_in_registers<3>, &matmul_in_registers<4>};
    for (int64_t m = 0; m < rows; m += kRegisterRows) {
      const int64_t count = rows - m < kRegisterRows ? rows - m : kRegisterRows;
      by_rows[count - 1](inputs.get() + m * kChunk, rows, in_features, packed, absmax, shift, out_features, first,
                         last, y + m * out_features);
    }
    return;
  }
#endif
  alignas(64) float weights[kTileCols * kChunk];
  Vec sums[kMaxFusedRows * kTileCols];
  float tails[kMaxFusedRows * kTileCols];  // products past the last whole vector of a strip
  for (int64_t feature = first; feature < last; feature += kTileCols) {
    const int cols = static_cast<int>(last - feature < kTileCols ? last - feature : kTileCols);
    for (int64_t i = 0; i < rows * kTileCols; ++i) {
      sums[i] = Vec(0.0f);
      tails[i] = 0.0f;
    }
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t k = chunk * kChunk;
      const int64_t count = in_features - k < kChunk ? in_features - k : kChunk;
      const int64_t whole = count - count % kLanes;
      for (int c = 0; c < cols; ++c) {
        const int64_t start = (feature + c) * in_features + k;
#ifdef PEFTPLUG_NF4_WORD_ORDER
        if (word_order) {
          for (int64_t unit = 0; unit < count; unit += kUnit)
            decode_unit(packed, absmax, shift, start + unit, weights + c * kChunk + unit);
          continue;
        }
#endif
        dequantize(packed, absmax, blocksize, start, start + count, weights + c * kChunk);
      }
      const float* chunk_inputs = inputs.get() + chunk * rows * kChunk;
      for (int64_t m = 0; m < rows; m += kTileRows) {
        const int tile_rows = static_cast<int>(rows - m < kTileRows ? rows - m : kTileRows);
        tile_of(tile_rows, cols, chunk_inputs + m * kChunk, weights, whole, sums + m * kTileCols, kTileCols);
      }
      for (int64_t m = 0; m < rows; ++m)
        for (int c = 0; c < cols; ++c)
          for (int64_t i = whole; i < count; ++i)
            tails[m * kTileCols + c] += chunk_inputs[m * kChunk + i] * weights[c * kChunk + i];
    }
    for (int64_t m = 0; m < rows; ++m)
      for (int c = 0; c < cols; ++c)
        y[m * out_features + feature + c] = lane_sum(sums[m * kTileCols + c]) + tails[m * kTileCols + c];
  }
}

}  // namespace

extern const CpuKernels kCpuKernels{&dequantize, &matmul};

}  // namespace CPU_CAPABILITY
}  // namespace peftplug::nf4
