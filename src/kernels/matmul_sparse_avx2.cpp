// AVX2 decode kernel of sparse-q8 (tensor/sparse_q8.h): each 8-bit piece of the mask selects a
// pshufb pattern from a 256-entry table that spreads the packed non-zero codes to their columns
// (the AVX2 stand-in for AVX-512 VBMI2's vpexpandb), then the usual sign/abs maddubs int8 dot with
// the Q8 activations. Scalar twin: sparse_q8_rows_reference (matmul_reference.cpp).
#include <immintrin.h>

#include <array>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/matmul_kernels.h"
#include "tensor/fp16.h"
#include "tensor/sparse_q8.h"

namespace frugal::kernels {
namespace {

// kExpand[m] byte j: for bit j of m set, the index of that code among the set bits below it
// (popcount of the lower bits); 0x80 (pshufb writes zero) otherwise.
constexpr auto kExpand = [] {
  std::array<uint64_t, 256> t{};
  for (int m = 0; m < 256; ++m) {
    uint64_t e = 0;
    int k = 0;
    for (int j = 0; j < 8; ++j) {
      const uint64_t byte = (m >> j & 1) ? static_cast<uint64_t>(k++) : 0x80;
      e |= byte << (8 * j);
    }
    t[static_cast<size_t>(m)] = e;
  }
  return t;
}();

// 16 bytes from p, without reading at or past `end` (the last row of a tensor ends the mapping).
inline __m128i load16(const int8_t* p, const int8_t* end) {
  if (end - p >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  alignas(16) int8_t buf[16] = {};
  if (end > p) std::memcpy(buf, p, static_cast<size_t>(end - p));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
}

// 16 weights of mask bits m16 from the codes at v (v advances past them).
inline __m128i expand16(uint32_t m16, const int8_t*& v, const int8_t* end) {
  const uint32_t lo = m16 & 0xff, hi = m16 >> 8;
  const int pop_lo = std::popcount(lo);
  const __m128i idx = _mm_set_epi64x(static_cast<long long>(kExpand[hi] + 0x0101010101010101ull * pop_lo),
                                     static_cast<long long>(kExpand[lo]));
  const __m128i w = _mm_shuffle_epi8(load16(v, end), idx);
  v += pop_lo + std::popcount(hi);
  return w;
}

}  // namespace

void sparse_q8_to_q8_0_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const int c = sparse_q8_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    uint8_t* blocks = out + (r - r0) * (w.cols / 32) * 34;
    const int8_t* v = row.values;
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      for (int half = 0; half < 2; ++half) {
        uint8_t* q = blocks + (2 * b + half) * 34;
        std::memcpy(q, row.scales + 2 * b, 2);
        const uint32_t m32 = static_cast<uint32_t>(m >> (32 * half));
        const __m128i w0 = expand16(m32 & 0xffff, v, row.values_end);
        const __m128i w1 = expand16(m32 >> 16, v, row.values_end);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 2), w0);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 18), w1);
      }
    }
  }
}

void sparse_q8_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                         int64_t y_stride, uint8_t* scratch) {
  if (a.n_tokens != 1) {  // the driver sends only decode here; anything else takes the twin
    sparse_q8_rows_reference(w, r0, r1, a, y, y_stride, scratch);
    return;
  }
  const int c = sparse_q8_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  const int8_t* x = a.codes(0);  // one token: codes contiguous in column order
  const float* d = a.array(0, ActivationArray::kD32);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    const int8_t* v = row.values;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      uint16_t h;
      std::memcpy(&h, row.scales + 2 * b, 2);
      const float s = fp16_to_float(h);
      for (int half = 0; half < 2; ++half) {
        const uint32_t m32 = static_cast<uint32_t>(m >> (32 * half));
        if (m32 == 0) continue;
        const __m128i w0 = expand16(m32 & 0xffff, v, row.values_end);
        const __m128i w1 = expand16(m32 >> 16, v, row.values_end);
        const __m256i wq = _mm256_set_m128i(w1, w0);
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + b * kSparseBlock + 32 * half));
        // |w| (u8) x (x with w's sign) (s8): maddubs needs one unsigned operand.
        const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
        const __m256i p32 = _mm256_madd_epi16(p16, ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(s * d[2 * b + half]), acc);
      }
    }
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    y[r] = _mm_cvtss_f32(q);
  }
}

}  // namespace frugal::kernels
