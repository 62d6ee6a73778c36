// AVX2 decode kernels of sparse-q4 (tensor/sparse_q4.h) and the N:M formats (tensor/nm_sparse.h):
// a block's packed codes are put in order as signed bytes (nibbles unpacked, minus 8), each 8-bit
// piece of the mask picks a pshufb pattern that spreads them to their columns (the AVX2 stand-in
// for vpexpandb, as in the sparse-q8 AVX2 kernel), then the sign/abs maddubs int8 dot with the Q8
// activations. Without vpexpandb this is more work per weight than q4_0's kernel: it keeps these
// formats usable on AVX2-only CPUs (instead of the scalar twin), not faster than the dense types.
// Scalar twins: sparse_q4_rows_reference, nm_rows_reference.
#include <immintrin.h>

#include <array>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_q4_kernels.h"
#include "tensor/fp16.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"

namespace frugal::kernels {
namespace {

// kExpand[m] byte j: for bit j of m set, the index of that value among the set bits below it;
// 0x80 (pshufb writes zero) otherwise.
constexpr auto kExpand = [] {
  std::array<uint64_t, 256> t{};
  for (int m = 0; m < 256; ++m) {
    uint64_t e = 0;
    int k = 0;
    for (int j = 0; j < 8; ++j) e |= ((m >> j & 1) ? static_cast<uint64_t>(k++) : 0x80) << (8 * j);
    t[static_cast<size_t>(m)] = e;
  }
  return t;
}();

// A block's values in order as signed bytes, with 16 bytes of slack (pshufb reads 16 at a time).
struct Unpacked {
  alignas(32) int8_t v[64 + 16];
};

// `bytes` bytes of packed 4-bit codes (<= 32) unpacked to codes - 8, in order.
inline void unpack_nibbles(const uint8_t* p, int bytes, Unpacked& out) {
  alignas(32) uint8_t raw[32] = {};
  std::memcpy(raw, p, static_cast<size_t>(bytes));
  const __m256i mask = _mm256_set1_epi16(0x0f0f);
  const __m256i eight = _mm256_set1_epi8(8);
  for (int h = 0; h < 2; ++h) {
    const __m256i wide = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(raw + 16 * h)));
    const __m256i codes = _mm256_and_si256(_mm256_or_si256(wide, _mm256_slli_epi16(wide, 4)), mask);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.v + 32 * h), _mm256_sub_epi8(codes, eight));
  }
}

// 16 weights of mask bits m16 from the values at v (v advances past them); v has 16 readable bytes.
inline __m128i expand16(uint32_t m16, const int8_t*& v) {
  const uint32_t lo = m16 & 0xff, hi = m16 >> 8;
  const int pop_lo = std::popcount(lo);
  const __m128i idx = _mm_set_epi64x(static_cast<long long>(kExpand[hi] + 0x0101010101010101ull * pop_lo),
                                     static_cast<long long>(kExpand[lo]));
  const __m128i w = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v)), idx);
  v += pop_lo + std::popcount(hi);
  return w;
}

// Adds block b's product (values in order at v, mask m, scale s) to acc.
inline __m256 block_dot(uint64_t m, const int8_t* v, float s, const int8_t* x, const float* d, int64_t b, __m256 acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int half = 0; half < 2; ++half) {
    const uint32_t m32 = static_cast<uint32_t>(m >> (32 * half));
    if (m32 == 0) continue;
    const __m128i w0 = expand16(m32 & 0xffff, v);
    const __m128i w1 = expand16(m32 >> 16, v);
    const __m256i wq = _mm256_set_m128i(w1, w0);
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + b * kSparseBlock + 32 * half));
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones)), _mm256_set1_ps(s * d[2 * b + half]), acc);
  }
  return acc;
}

inline float hsum(__m256 acc) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

float scale_at(const uint8_t* scales, int64_t b) {
  uint16_t h;
  std::memcpy(&h, scales + 2 * b, 2);
  return fp16_to_float(h);
}

}  // namespace

void sparse_q4_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                         int64_t y_stride, uint8_t* scratch) {
  if (a.n_tokens != 1) {  // the driver sends only decode here; anything else takes the twin
    sparse_q4_rows_reference(w, r0, r1, a, y, y_stride, scratch);
    return;
  }
  const int c = sparse_q4_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  const int8_t* x = a.codes(0);
  const float* d = a.array(0, ActivationArray::kD32);
  Unpacked u{};  // the slack bytes stay zero
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ4Row row = sparse_q4_row(w.row(r), w.cols, c);
    const uint8_t* p = row.codes;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      const int bytes = (std::popcount(m) + 1) / 2;
      unpack_nibbles(p, bytes, u);
      p += bytes;
      acc = block_dot(m, u.v, scale_at(row.scales, b), x, d, b, acc);
    }
    y[r] = hsum(acc);
  }
}

void nm_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                  int64_t y_stride, uint8_t* scratch) {
  if (a.n_tokens != 1) {
    nm_rows_reference(w, r0, r1, a, y, y_stride, scratch);
    return;
  }
  const NmPattern pattern = nm_pattern(w.traits->type);
  FRUGAL_CHECK(pattern.bits != 0);
  const int64_t slot = kNmSlot * pattern.bits / 8;
  const int8_t* x = a.codes(0);
  const float* d = a.array(0, ActivationArray::kD32);
  Unpacked u{};  // the slack bytes stay zero
  for (int64_t r = r0; r < r1; ++r) {
    const NmRow row = nm_row(w.row(r), w.cols);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      if (pattern.bits == 8) {
        std::memcpy(u.v, row.values + b * slot, 32);  // a copy: pshufb reads 16 bytes past the last value
      } else {
        unpack_nibbles(row.values + b * slot, 16, u);
      }
      acc = block_dot(m, u.v, scale_at(row.scales, b), x, d, b, acc);
    }
    y[r] = hsum(acc);
  }
}

}  // namespace frugal::kernels
