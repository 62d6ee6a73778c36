// The AVX-512 SIMD policy of matmul_simd.h, shared by matmul_avx512.cpp (vpmaddubsw + vpmaddwd)
// and matmul_avx512vnni.cpp (vpdpbusd); internal linkage, one copy per translation unit.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kernels/matmul_simd.h"

namespace frugal::kernels {
namespace {

template <bool kHasVnni>
struct SimdAvx512 {
  static constexpr int kLanes = 16;
  static constexpr int kMaxTokens = 8;  // 8 int32 (+ 8 int16) + 8 float accumulators of 32 zmm
  static constexpr int kFloatRows = 4, kFloatTokens = 4;
  static constexpr bool kVnni = kHasVnni;
  using VI = __m512i;
  using VF = __m512;

  static VI zero() { return _mm512_setzero_si512(); }
  static VF zerof() { return _mm512_setzero_ps(); }
  static VI load(const uint8_t* p) { return _mm512_load_si512(p); }
  static VI bcast32(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }
  // Unsigned weight codes x signed activation codes, 4 products summed into each int32 lane; the
  // broadcast folds into the instruction's {1to16} memory operand.
  static VI dpbusd(VI acc, VI w, const int8_t* x) { return _mm512_dpbusd_epi32(acc, w, bcast32(x)); }
  static VI maddubs(VI u, VI s) { return _mm512_maddubs_epi16(u, s); }
  static VI add16(VI a, VI b) { return _mm512_add_epi16(a, b); }
  static VI add32(VI a, VI b) { return _mm512_add_epi32(a, b); }
  static VI madd_ones(VI v) { return _mm512_madd_epi16(v, _mm512_set1_epi16(1)); }
  static VI abs8(VI v) { return _mm512_abs_epi8(v); }
  // x negated where w is negative (AVX-512 has no vpsignb; w == 0 needs no care: |w| is 0 there).
  static VI sign8(VI x, VI w) { return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x); }
  static VF cvt(VI v) { return _mm512_cvtepi32_ps(v); }
  static VF loadf(const float* p) { return _mm512_loadu_ps(p); }
  static VF mul_bcast(VF a, const float* p) { return _mm512_mul_ps(a, _mm512_set1_ps(*p)); }
  static VF fmadd(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
  static VF fmadd_bcast(VF a, const float* p, VF c) { return _mm512_fmadd_ps(a, _mm512_set1_ps(*p), c); }
  static void storef(float* y, VF v, int n) {
    if (n == kLanes) {
      _mm512_storeu_ps(y, v);
    } else {
      _mm512_mask_storeu_ps(y, static_cast<__mmask16>((1u << n) - 1), v);
    }
  }
  static VF load_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static VF load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static float hsum(VF v) { return _mm512_reduce_add_ps(v); }
  // 16 rows of 32 codes -> 8 steps of [16 rows][4 bytes]. Rows i and i+8 share a register, so an
  // 8x8 transpose of 32-bit words inside each 256-bit half does both row sets at once.
  static void transpose_codes(const uint8_t* rows, int64_t stride, uint8_t* out) {
    __m512i r[8];
    for (int i = 0; i < 8; ++i) {
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + i * stride));
      const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + (i + 8) * stride));
      r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    const __m512i t0 = _mm512_unpacklo_epi32(r[0], r[1]), t1 = _mm512_unpackhi_epi32(r[0], r[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(r[2], r[3]), t3 = _mm512_unpackhi_epi32(r[2], r[3]);
    const __m512i t4 = _mm512_unpacklo_epi32(r[4], r[5]), t5 = _mm512_unpackhi_epi32(r[4], r[5]);
    const __m512i t6 = _mm512_unpacklo_epi32(r[6], r[7]), t7 = _mm512_unpackhi_epi32(r[6], r[7]);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    const __m512i u4 = _mm512_unpacklo_epi64(t4, t6), u5 = _mm512_unpackhi_epi64(t4, t6);
    const __m512i u6 = _mm512_unpacklo_epi64(t5, t7), u7 = _mm512_unpackhi_epi64(t5, t7);
    // u0 = [w0 rows 0-3 | w4 rows 0-3 | w0 rows 8-11 | w4 rows 8-11], u4 the same for rows 4-7/12-15.
    const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i second = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    __m512i* o = reinterpret_cast<__m512i*>(out);
    _mm512_store_si512(o + 0, _mm512_permutex2var_epi64(u0, first, u4));
    _mm512_store_si512(o + 1, _mm512_permutex2var_epi64(u1, first, u5));
    _mm512_store_si512(o + 2, _mm512_permutex2var_epi64(u2, first, u6));
    _mm512_store_si512(o + 3, _mm512_permutex2var_epi64(u3, first, u7));
    _mm512_store_si512(o + 4, _mm512_permutex2var_epi64(u0, second, u4));
    _mm512_store_si512(o + 5, _mm512_permutex2var_epi64(u1, second, u5));
    _mm512_store_si512(o + 6, _mm512_permutex2var_epi64(u2, second, u6));
    _mm512_store_si512(o + 7, _mm512_permutex2var_epi64(u3, second, u7));
  }
};

}  // namespace
}  // namespace frugal::kernels
