// The AVX-512 SIMD policy of matmul_simd.h, shared by matmul_avx512.cpp (vpmaddubsw + vpmaddwd)
// and matmul_avx512vnni.cpp (vpdpbusd); internal linkage, one copy per translation unit.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "kernels/matmul_simd.h"

namespace frugal::kernels {
namespace {

template <bool kHasVnni>
struct SimdAvx512 {
  static constexpr int kLanes = 16;
  static constexpr int kMaxTokens = 8;  // 8 int32 (+ 8 int16) + 8 float accumulators of 32 zmm
  static constexpr int kFloatRows = 4, kFloatTokens = 4;
  // 3 rows x up to 8 tokens: 24 accumulators + 3 weight vectors + 1 activation of 32 zmm.
  static constexpr int kFloatSmallBatchRows = 3;
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
  static VI dpbusd(VI acc, VI w, const int8_t* x) {
    if constexpr (kHasVnni) {
      // GCC does not fold the broadcast of _mm512_dpbusd_epi32(acc, w, set1(x)) into the memory
      // operand (it emits a vpbroadcastd per vpdpbusd: twice the front-end uops of the hot loop),
      // so the embedded {1to16} broadcast is written out. Same instruction, same sums.
      __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(x)));
      return acc;
    } else {
      return _mm512_dpbusd_epi32(acc, w, bcast32(x));
    }
  }
  static VI maddubs(VI u, VI s) { return _mm512_maddubs_epi16(u, s); }
  static VI add16(VI a, VI b) { return _mm512_add_epi16(a, b); }
  static VI add32(VI a, VI b) { return _mm512_add_epi32(a, b); }
  static VI madd_ones(VI v) { return _mm512_madd_epi16(v, _mm512_set1_epi16(1)); }
  static VI abs8(VI v) { return _mm512_abs_epi8(v); }
  // x negated where w is negative (AVX-512 has no vpsignb; w == 0 needs no care: |w| is 0 there).
  static VI sign8(VI x, VI w) { return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x); }
  static VF cvt(VI v) { return _mm512_cvtepi32_ps(v); }
  // acc + lo16(a) * lo16(b) + hi16(a) * hi16(b) per int32 lane (signed; the folded K-quant sums).
  static VI dpwssd(VI acc, VI a, VI b) {
    if constexpr (kHasVnni) {
      return _mm512_dpwssd_epi32(acc, a, b);
    } else {
      return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
    }
  }
  // dpwssd with b the 32-bit word at p broadcast (embedded {1to16} with VNNI, as dpbusd).
  static VI dpwssd_bcast(VI acc, VI a, const int8_t* p) {
    if constexpr (kHasVnni) {
      __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*reinterpret_cast<const int32_t*>(p)));
      return acc;
    } else {
      return dpwssd(acc, a, bcast32(p));
    }
  }
  // The int16 pair (lo, hi) of two int32 vectors (each value fits int16).
  static VI pair16(VI lo, VI hi) { return _mm512_mask_blend_epi16(0xaaaaaaaau, lo, _mm512_slli_epi32(hi, 16)); }
  static VI low16(VI v) { return _mm512_and_si512(v, _mm512_set1_epi32(0xffff)); }
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
  // The first n lanes of y, zero elsewhere (a partial tile's running sums).
  static VF loadf_partial(const float* y, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), y);
  }
  static VF load_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static VF load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static float hsum(VF v) { return _mm512_reduce_add_ps(v); }
  static void store(uint8_t* p, VI v) { _mm512_store_si512(p, v); }
  // 16 rows of 32 codes -> 8 steps of [16 rows][4 bytes]. Rows i and i+8 share a register, so an
  // 8x8 transpose of 32-bit words inside each 256-bit half does both row sets at once.
  static void transpose_codes(const uint8_t* rows, int64_t stride, uint8_t* out) {
    VI steps[8];
    rows_to_steps(rows, stride, steps);
    for (int j = 0; j < 8; ++j) store(out + j * 64, steps[j]);
  }
  static void rows_to_steps(const uint8_t* rows, int64_t stride, VI o[8]) {
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
    o[0] = _mm512_permutex2var_epi64(u0, first, u4);
    o[1] = _mm512_permutex2var_epi64(u1, first, u5);
    o[2] = _mm512_permutex2var_epi64(u2, first, u6);
    o[3] = _mm512_permutex2var_epi64(u3, first, u7);
    o[4] = _mm512_permutex2var_epi64(u0, second, u4);
    o[5] = _mm512_permutex2var_epi64(u1, second, u5);
    o[6] = _mm512_permutex2var_epi64(u2, second, u6);
    o[7] = _mm512_permutex2var_epi64(u3, second, u7);
  }
};

// Row offsets of a 16-row tile as gather indices (row_bytes * 15 fits easily in 32 bits).
inline __m512i row_offsets(size_t row_bytes) {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32(static_cast<int32_t>(row_bytes)));
}

// The fp16 in the low (kHigh false) or high half of each gathered 32-bit word, as floats.
template <bool kHigh>
inline __m512 halves_to_float(__m512i words) {
  if constexpr (kHigh) words = _mm512_srli_epi32(words, 16);
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
}

// -v exactly (the sign flipped, as the decoders' unary minus; 0 - v would turn -0 into +0).
inline __m512 negate(__m512 v) { return _mm512_xor_ps(v, _mm512_set1_ps(-0.0f)); }

// Byte n (0..15) of each row's 16-byte window held as 4 transposed words (rows16_words4), as int32.
inline __m512i window_byte(const __m512i w[4], int n) {
  return _mm512_and_si512(_mm512_srli_epi32(w[n / 4], 8 * (n % 4)), _mm512_set1_epi32(0xff));
}

// 16 bytes of 16 rows (`row_bytes` apart) -> z[j] = 32-bit word j of every row: the rows go
// into 4 registers of 4 rows, then vpermt2d + vshufi64x2 transpose them.
inline void rows16_words4(const uint8_t* p, size_t row_bytes, __m512i z[4]) {
  __m512i a[4];
  for (int k = 0; k < 4; ++k) {
    const uint8_t* q = p + 4 * k * row_bytes;
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + row_bytes)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 2 * row_bytes)), 2);
    a[k] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 3 * row_bytes)), 3);
  }
  // a[k] word 4l + j is word j of row 4k + l. Words 0 and 1 (2 and 3) of rows 0-7 (8-15):
  const __m512i pick01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
  const __m512i pick23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
  const __m512i lo01 = _mm512_permutex2var_epi32(a[0], pick01, a[1]), hi01 = _mm512_permutex2var_epi32(a[2], pick01, a[3]);
  const __m512i lo23 = _mm512_permutex2var_epi32(a[0], pick23, a[1]), hi23 = _mm512_permutex2var_epi32(a[2], pick23, a[3]);
  z[0] = _mm512_shuffle_i64x2(lo01, hi01, 0x44);
  z[1] = _mm512_shuffle_i64x2(lo01, hi01, 0xee);
  z[2] = _mm512_shuffle_i64x2(lo23, hi23, 0x44);
  z[3] = _mm512_shuffle_i64x2(lo23, hi23, 0xee);
}

// Q4_0 / Q4_1 blocks of a full 16-row tile: each row's 16 nibble bytes (4 words) go into 4
// registers of 4 rows, vpermt2d + vshufi64x2 transpose them to word j of every row, and the low
// nibbles give steps 0-3 (element i < 16 is the low nibble of qs[i]), the high ones steps 4-7.
// The block header (d, or d and m, the first 32-bit word) comes with one gather.
template <bool kVnni, int kQsOffset, bool kHasMin>
class NibbleTile {
 public:
  static constexpr bool kAvailable = true;
  NibbleTile(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), block_bytes_(w.traits->block_bytes), offsets_(row_offsets(w.row_bytes)) {}
  void load(int64_t b, __m512i steps[8], __m512& dw, __m512& mw) const {
    const uint8_t* p = base_ + b * block_bytes_;
    __m512i z[4];
    rows16_words4(p + kQsOffset, row_bytes_, z);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int j = 0; j < 4; ++j) {
      steps[j] = _mm512_and_si512(z[j], m4);
      steps[j + 4] = _mm512_and_si512(_mm512_srli_epi16(z[j], 4), m4);
    }
    const __m512i header = _mm512_i32gather_epi32(offsets_, p, 1);
    dw = halves_to_float<false>(header);
    mw = kHasMin ? halves_to_float<true>(header) : _mm512_mul_ps(dw, _mm512_set1_ps(-8.0f));
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_, block_bytes_;
  __m512i offsets_;
};

// Q5_0 / Q5_1 blocks of a full 16-row tile: the nibbles as NibbleTile, and the fifth bits from
// qh (bit e of the 32-bit qh is the fifth bit of element e, as dequantize_row_q5_0 in
// ggml-quants.c), gathered as one word per row: a byte shuffle copies qh byte e / 8 into the 4
// bytes of each step and a bit test selects bit e % 8, adding 0x10 where it is set.
template <bool kVnni, bool kHasMin>
class Nibble5Tile {
 public:
  static constexpr bool kAvailable = true;
  using Block = std::conditional_t<kHasMin, BlockQ5_1, BlockQ5_0>;
  Nibble5Tile(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), offsets_(row_offsets(w.row_bytes)) {}
  void load(int64_t b, __m512i steps[8], __m512& dw, __m512& mw) const {
    const uint8_t* p = base_ + b * sizeof(Block);
    __m512i z[4];
    rows16_words4(p + offsetof(Block, qs), row_bytes_, z);
    const __m512i m4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
    const __m512i qh = _mm512_i32gather_epi32(offsets_, p + offsetof(Block, qh), 1);
    // Byte n of every word replicated into its 4 bytes (vpshufb indexes within 128-bit lanes).
    const __m512i spread = _mm512_set_epi32(0x0c0c0c0c, 0x08080808, 0x04040404, 0, 0x0c0c0c0c, 0x08080808, 0x04040404, 0,
                                            0x0c0c0c0c, 0x08080808, 0x04040404, 0, 0x0c0c0c0c, 0x08080808, 0x04040404, 0);
    // Bits 0-3 (steps of even j) and 4-7 (odd j) of the replicated byte, one per byte of a word.
    const __m512i bits_even = _mm512_set1_epi32(0x08040201), bits_odd = _mm512_set1_epi32(static_cast<int>(0x80402010u));
#pragma GCC unroll 4
    for (int n = 0; n < 4; ++n) {
      // qh byte n holds the fifth bits of elements 8n..8n+7: steps 2n, 2n+1 (n < 2, low nibbles)
      // or 2n - 4, 2n - 3 (n >= 2, high nibbles, elements 16 + ...).
      const __m512i rep = _mm512_shuffle_epi8(qh, _mm512_add_epi8(spread, _mm512_set1_epi8(static_cast<char>(n))));
      for (int odd = 0; odd < 2; ++odd) {
        const int j = (2 * n + odd) % 4;
        const __m512i nib = n < 2 ? _mm512_and_si512(z[j], m4) : _mm512_and_si512(_mm512_srli_epi16(z[j], 4), m4);
        const __mmask64 set = _mm512_test_epi8_mask(rep, odd ? bits_odd : bits_even);
        steps[2 * n + odd] = _mm512_mask_add_epi8(nib, set, nib, bit4);
      }
    }
    const __m512i header = _mm512_i32gather_epi32(offsets_, p, 1);
    dw = halves_to_float<false>(header);
    mw = kHasMin ? halves_to_float<true>(header) : _mm512_mul_ps(dw, _mm512_set1_ps(-16.0f));
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_;
  __m512i offsets_;
};

// Q8_0 blocks of a full 16-row tile: the 32 code bytes of each row (at +2) transposed in
// registers; with VNNI the codes are shifted to unsigned (+128, offset folded into mw).
template <bool kVnni>
class Q8Tile {
 public:
  static constexpr bool kAvailable = true;
  Q8Tile(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), block_bytes_(w.traits->block_bytes), offsets_(row_offsets(w.row_bytes)) {}
  void load(int64_t b, __m512i steps[8], __m512& dw, __m512& mw) const {
    const uint8_t* p = base_ + b * block_bytes_;
    SimdAvx512<kVnni>::rows_to_steps(p + 2, static_cast<int64_t>(row_bytes_), steps);
    dw = halves_to_float<false>(_mm512_i32gather_epi32(offsets_, p, 1));
    if constexpr (kVnni) {
      for (int j = 0; j < 8; ++j) steps[j] = _mm512_xor_si512(steps[j], _mm512_set1_epi8(-128));
      mw = _mm512_mul_ps(dw, _mm512_set1_ps(-128.0f));
    } else {
      mw = _mm512_setzero_ps();
    }
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_, block_bytes_;
  __m512i offsets_;
};

// Q4_K / Q5_K super-blocks of a full 16-row tile: the 16-byte headers (d, dmin, 12 bytes of
// packed 6-bit scales and mins) are transposed to 4 words per row and unpacked lane-wise (the
// packing of get_scale_min_k4 in ggml-quants.c); each 32-byte chunk of nibbles gives sub-block
// 2g (low nibbles) and 2g + 1 (high nibbles). Q5_K's qh (32 bytes, bit j of qh[l] the fifth bit
// of element 32j + l) is transposed once per block like the nibbles and shifted to bit 4.
template <bool kVnni, bool kFive = false>
class Q45KTile {
 public:
  static constexpr bool kAvailable = true;
  Q45KTile(const WeightMatrix& w, int64_t r0) : base_(w.row(r0)), row_bytes_(w.row_bytes) {}
  template <class Fn>
  void for_each_sub(int64_t b, Fn&& fn) const {
    using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
    const uint8_t* p = base_ + b * sizeof(Block);
    __m512i h[4];  // d | dmin << 16, then scale bytes 0-3, 4-7, 8-11
    rows16_words4(p, row_bytes_, h);
    const __m512 d = halves_to_float<false>(h[0]);
    const __m512 neg_dmin = negate(halves_to_float<true>(h[0]));
    const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(15), m3 = _mm512_set1_epi32(3);
    const __m512i nibble = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
    __m512i qh[8];
    if constexpr (kFive) SimdAvx512<kVnni>::rows_to_steps(p + offsetof(BlockQ5_K, qh), static_cast<int64_t>(row_bytes_), qh);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      __m512i z[8];
      SimdAvx512<kVnni>::rows_to_steps(p + offsetof(Block, qs) + 32 * g, static_cast<int64_t>(row_bytes_), z);
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * g + half;
        __m512i sc, m;
        if (j < 4) {
          sc = _mm512_and_si512(_mm512_srli_epi32(h[1], 8 * j), m6);
          m = _mm512_and_si512(_mm512_srli_epi32(h[2], 8 * j), m6);
        } else {
          const int s = 8 * (j - 4);
          sc = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(h[3], s), m4),
                               _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h[1], s + 6), m3), 4));
          m = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(h[3], s + 4), m4),
                              _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h[2], s + 6), m3), 4));
        }
        __m512i steps[8];
        for (int k = 0; k < 8; ++k) {
          steps[k] = half == 0 ? _mm512_and_si512(z[k], nibble) : _mm512_and_si512(_mm512_srli_epi16(z[k], 4), nibble);
          if constexpr (kFive) {
            // Bit j of each qh byte to bit 4 (16-bit shifts of at most 4 left / 3 right never
            // carry a bit across bytes into bit 4).
            const __m512i high = j <= 4 ? _mm512_slli_epi16(qh[k], 4 - j) : _mm512_srli_epi16(qh[k], j - 4);
            steps[k] = _mm512_ternarylogic_epi32(steps[k], high, bit4, 0xf8);  // a | (b & c)
          }
        }
        fn(j, steps, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)), _mm512_mul_ps(neg_dmin, _mm512_cvtepi32_ps(m)));
      }
    }
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_;
};

// Q2_K super-blocks of a full 16-row tile: the 16 scale bytes (low nibble the scale, high the
// minimum, as dequantize_row_q2_K in ggml-quants.c) transposed to 4 words per row, d and dmin
// gathered; each 32-byte half of qs, transposed, gives 4 element groups 128h + 32k + l as bits
// 2k..2k+1 of every byte, 2 sub-blocks of 16 each.
template <bool kVnni>
class Q2KTile {
 public:
  static constexpr bool kAvailable = true;
  Q2KTile(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), offsets_(row_offsets(w.row_bytes)) {}
  // fold_block(b, fn, dw, mw): fn(i, steps, a_i, m_i) for the 16 sub-blocks in order (a_i, m_i
  // the integer scale and minimum as int32 lanes), then the super-block's dw, mw (kFoldWords).
  template <class Fn>
  void fold_block(int64_t b, Fn&& fn, __m512& dw, __m512& mw) const {
    const uint8_t* p = base_ + b * sizeof(BlockQ2_K);
    __m512i sc4[4];  // scale bytes 4i..4i+3 of every row
    rows16_words4(p + offsetof(BlockQ2_K, scales), row_bytes_, sc4);
    const __m512i header = _mm512_i32gather_epi32(offsets_, p + offsetof(BlockQ2_K, d), 1);
    dw = halves_to_float<false>(header);
    mw = negate(halves_to_float<true>(header));
    const __m512i m3 = _mm512_set1_epi8(3), low4 = _mm512_set1_epi32(15);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512i q[8];
      SimdAvx512<kVnni>::rows_to_steps(p + offsetof(BlockQ2_K, qs) + 32 * h, static_cast<int64_t>(row_bytes_), q);
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        __m512i codes[8];
        for (int s = 0; s < 8; ++s) codes[s] = _mm512_and_si512(_mm512_srli_epi16(q[s], 2 * k), m3);
#pragma GCC unroll 2
        for (int part = 0; part < 2; ++part) {
          const int i = 8 * h + 2 * k + part;  // sub-block of steps 4 * part .. 4 * part + 3
          const __m512i sc = window_byte(sc4, i);
          fn(i, codes + 4 * part, _mm512_and_si512(sc, low4), _mm512_srli_epi32(sc, 4));
        }
      }
    }
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_;
  __m512i offsets_;
};

// Q3_K super-blocks of a full 16-row tile: the 2 low bits as Q2_K, the third from bit 4h + k of
// hmask[l] (transposed once per block), codes low | high << 2 with an offset of 4; the 16-byte
// window ending the block (2 bytes of qs, the 12 bytes of packed 6-bit signed scales, d) is
// transposed to 4 words per row (scales unpacked as dequantize_row_q3_K in ggml-quants.c).
template <bool kVnni>
class Q3KTile {
 public:
  static constexpr bool kAvailable = true;
  Q3KTile(const WeightMatrix& w, int64_t r0) : base_(w.row(r0)), row_bytes_(w.row_bytes) {}
  template <class Fn>
  void fold_block(int64_t b, Fn&& fn, __m512& dw, __m512& mw) const {
    using Simd = SimdAvx512<kVnni>;
    const uint8_t* p = base_ + b * sizeof(BlockQ3_K);
    constexpr int kWindow = static_cast<int>(sizeof(BlockQ3_K)) - 16;  // scale byte n at 2 + n, d at 14
    static_assert(offsetof(BlockQ3_K, scales) == kWindow + 2 && offsetof(BlockQ3_K, d) == kWindow + 14);
    __m512i win[4];
    rows16_words4(p + kWindow, row_bytes_, win);
    dw = halves_to_float<true>(win[3]);
    mw = _mm512_mul_ps(_mm512_set1_ps(-4.0f), dw);  // -4.0f * d, as DecodeQ3_K
    __m512i hm[8];
    Simd::rows_to_steps(p + offsetof(BlockQ3_K, hmask), static_cast<int64_t>(row_bytes_), hm);
    const __m512i m3 = _mm512_set1_epi8(3), bit2 = _mm512_set1_epi8(4);
    const __m512i low4 = _mm512_set1_epi32(15), two = _mm512_set1_epi32(3), bias = _mm512_set1_epi32(32);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512i q[8];
      Simd::rows_to_steps(p + offsetof(BlockQ3_K, qs) + 32 * h, static_cast<int64_t>(row_bytes_), q);
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const int bit = 4 * h + k;
        __m512i codes[8];
        for (int s = 0; s < 8; ++s) {
          const __m512i low = _mm512_and_si512(_mm512_srli_epi16(q[s], 2 * k), m3);
          // Bit `bit` of each hmask byte to bit 2 (no carry across bytes reaches bit 2).
          const __m512i high = bit >= 2 ? _mm512_srli_epi16(hm[s], bit - 2) : _mm512_slli_epi16(hm[s], 2 - bit);
          codes[s] = _mm512_ternarylogic_epi32(low, high, bit2, 0xf8);  // a | (b & c)
        }
#pragma GCC unroll 2
        for (int part = 0; part < 2; ++part) {
          const int i = 8 * h + 2 * k + part;
          const __m512i low = i < 8 ? _mm512_and_si512(window_byte(win, 2 + i), low4)
                                    : _mm512_srli_epi32(window_byte(win, 2 + i - 8), 4);
          const __m512i high = _mm512_and_si512(_mm512_srli_epi32(window_byte(win, 10 + i % 4), 2 * (i / 4)), two);
          const __m512i sc = _mm512_sub_epi32(_mm512_or_si512(low, _mm512_slli_epi32(high, 4)), bias);
          fn(i, codes + 4 * part, sc, sc);
        }
      }
    }
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_;
};

// Q6_K super-blocks of a full 16-row tile: ql and qh chunks are transposed in registers and
// combined into codes q + 32 (low 4 bits from a nibble of ql, high 2 from qh, layout of
// dequantize_row_q6_K in ggml-quants.c); 16-element sub-blocks with signed 8-bit scales.
template <bool kVnni>
class Q6KTile {
 public:
  static constexpr bool kAvailable = true;
  Q6KTile(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), offsets_(row_offsets(w.row_bytes)) {}
  template <class Fn>
  void fold_block(int64_t b, Fn&& fn, __m512& dw, __m512& mw) const {
    using Simd = SimdAvx512<kVnni>;
    const uint8_t* p = base_ + b * sizeof(BlockQ6_K);
    __m512i sc4[4];  // scale bytes 4i..4i+3 of every row
    rows16_words4(p + offsetof(BlockQ6_K, scales), row_bytes_, sc4);
    // d is the high half of the word ending the block (no read past the block).
    dw = halves_to_float<true>(_mm512_i32gather_epi32(offsets_, p + offsetof(BlockQ6_K, d) - 2, 1));
    mw = _mm512_mul_ps(dw, _mm512_set1_ps(-32.0f));  // -32.0f * d, as DecodeQ6_K
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512i qh[8];
      Simd::rows_to_steps(p + offsetof(BlockQ6_K, qh) + 32 * h, static_cast<int64_t>(row_bytes_), qh);
      // The codes of the four element groups 128h + 32k: a 32-byte ql chunk kk holds groups kk
      // (low nibbles) and kk + 2 (high), so the chunks are read in the order 0, 1 but the groups
      // must be handed out 0, 1, 2, 3: decode_tile sums the sub-blocks in the order given, and
      // the prefill path sums them in index order; the same order keeps the two bit-identical.
      __m512i codes[4][8];
#pragma GCC unroll 2
      for (int kk = 0; kk < 2; ++kk) {
        __m512i ql[8];
        Simd::rows_to_steps(p + 64 * h + 32 * kk, static_cast<int64_t>(row_bytes_), ql);
#pragma GCC unroll 2
        for (int hi = 0; hi < 2; ++hi) {
          const int k = kk + 2 * hi;
          for (int j = 0; j < 8; ++j) {
            const __m512i low = hi ? _mm512_and_si512(_mm512_srli_epi16(ql[j], 4), m4) : _mm512_and_si512(ql[j], m4);
            __m512i high;  // bits 2k..2k+1 of qh moved to bits 4..5 (16-bit shifts never carry across bytes here)
            if (k == 0) high = _mm512_slli_epi16(qh[j], 4);
            else if (k == 1) high = _mm512_slli_epi16(qh[j], 2);
            else if (k == 2) high = qh[j];
            else high = _mm512_srli_epi16(qh[j], 2);
            codes[k][j] = _mm512_or_si512(low, _mm512_and_si512(high, m30));
          }
        }
      }
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 2
        for (int part = 0; part < 2; ++part) {
          const int i = 8 * h + 2 * k + part;  // sub-block of steps 4 * part .. 4 * part + 3
          const int e = i % 4;
          const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(sc4[i / 4], 24 - 8 * e), 24);
          fn(i, codes[k] + 4 * part, sc, sc);
        }
      }
    }
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_;
  __m512i offsets_;
};

template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ4_0> : OneSubBlock<NibbleTile<V, 2, false>, SimdAvx512<V>> {
  using OneSubBlock<NibbleTile<V, 2, false>, SimdAvx512<V>>::OneSubBlock;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ4_1> : OneSubBlock<NibbleTile<V, 4, true>, SimdAvx512<V>> {
  using OneSubBlock<NibbleTile<V, 4, true>, SimdAvx512<V>>::OneSubBlock;
};
template <>
struct FastTile<SimdAvx512<true>, DecodeQ8_0Offset> : OneSubBlock<Q8Tile<true>, SimdAvx512<true>> {
  using OneSubBlock::OneSubBlock;
};
template <>
struct FastTile<SimdAvx512<false>, DecodeQ8_0Signed> : OneSubBlock<Q8Tile<false>, SimdAvx512<false>> {
  using OneSubBlock::OneSubBlock;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ5_0> : OneSubBlock<Nibble5Tile<V, false>, SimdAvx512<V>> {
  using OneSubBlock<Nibble5Tile<V, false>, SimdAvx512<V>>::OneSubBlock;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ5_1> : OneSubBlock<Nibble5Tile<V, true>, SimdAvx512<V>> {
  using OneSubBlock<Nibble5Tile<V, true>, SimdAvx512<V>>::OneSubBlock;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ45_K<false>> : Q45KTile<V, false> {
  using Q45KTile<V, false>::Q45KTile;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ45_K<true>> : Q45KTile<V, true> {
  using Q45KTile<V, true>::Q45KTile;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ2_K> : Q2KTile<V> {
  using Q2KTile<V>::Q2KTile;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ3_K> : Q3KTile<V> {
  using Q3KTile<V>::Q3KTile;
};
template <bool V>
struct FastTile<SimdAvx512<V>, DecodeQ6_K> : Q6KTile<V> {
  using Q6KTile<V>::Q6KTile;
};

}  // namespace
}  // namespace frugal::kernels
