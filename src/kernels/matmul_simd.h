// The matmul kernels written once over a SIMD policy `S` (lanes, the u8 x s8 dot step, loads,
// transposes) and compiled once per ISA by matmul_avx2.cpp, matmul_avx512.cpp and
// matmul_avx512vnni.cpp. Everything here has internal linkage (unnamed namespace) so each ISA's
// translation unit keeps its own copy: no inline function compiled with AVX-512 flags can be
// picked by the linker for the AVX2 build.
//
// Integer path (llama.cpp's scheme: weights stay in their GGML blocks, activations are quantized
// to 8 bits per block, products are exact int32 sums per block, scaled in float):
//   y[t][r] = sum over sub-blocks b of  dw[r][b] * dx[t][b] * sum_i c[r][i] * q[t][i]  +  mw[r][b] * sx[t][b]
// where c are the weight codes as unsigned bytes (the stored code; Q8_0 is shifted by +128 for
// vpdpbusd, or kept signed for the maddubs sign trick), dw the weight scale, and mw the
// per-sub-block term that absorbs the code offset (-8*dw for Q4_0, -32*d*sc for Q6_K, ...) or
// the stored minimum (Q4_1 m, -dmin*m for Q4_K). sx = dx * sum(q) comes
// with the quantized activations, so the offset costs one FMA per sub-block instead of a
// subtraction per weight. The 16-element K-quants (Q2_K, Q3_K, Q6_K) instead fold their sub-block
// scales into one sum per 256-element super-block (see kFoldWords).
//
// Prefill: a tile of S::kLanes rows is decoded once into codes interleaved as [step][row][4 bytes]
// (a 4-byte step of every row in one vector), then multiplied with every token: one vector load
// of weights serves up to S::kMaxTokens tokens whose 4 codes are broadcast (vpdpbusd with an
// embedded broadcast on AVX512-VNNI; maddubs+madd otherwise). The result lanes are rows, so each
// token's outputs are one contiguous store. Inputs wider than 768 columns go in 512-column
// passes so the tile and the activations stay in L1; each pass continues the running sums of the
// last, so every token's outputs are bit-identical to the one-token decode path (batch invariance).
//
// Decode (one token) is bound by memory bandwidth: for the common types a FastTile loader moves
// each block of a full tile from the weight rows into step registers with an in-register
// transpose (no temporary buffer) and feeds them straight into the dot products, while the next
// tile is prefetched. Other types decode through a small buffer and a transpose.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/matmul_kernels.h"
#include "tensor/quant_blocks.h"

namespace frugal::kernels {
namespace {

using namespace frugal::quant;

inline float half_bits_to_float(uint16_t h) { return _cvtsh_ss(h); }

// ---------------------------------------------------------------------------------------------
// Weight block decoders: natural-order codes (unsigned bytes) plus per-sub-block dw and mw,
// written with a stride so they land directly in the tile's [sub-block][row] arrays.
// Layouts: ggml-common.h block_* structs (mirrored in tensor/quant_blocks.h).

inline void store_nibbles16(const uint8_t* qs, uint8_t* codes) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm_and_si128(q, m4));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm_and_si128(_mm_srli_epi16(q, 4), m4));
}

// Bit j of `bits` (j < 32) as 0x10 in byte j: the fifth bit of Q5_0/Q5_1 codes.
inline __m256i expand_bits_0x10(uint32_t bits) {
  const __m256i shuffle = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                           3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int32_t>(bits)), shuffle);
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

inline __m256i nibbles32(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

inline void store32(uint8_t* dst, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v); }
inline __m256i load32(const uint8_t* src) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)); }

// The 8 six-bit scales and mins of a Q4_K/Q5_K block (get_scale_min_k4 in ggml-quants.c).
inline void k4_scales_mins(const uint8_t* s, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
    sc[j + 4] = static_cast<uint8_t>((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
    m[j + 4] = static_cast<uint8_t>((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

// The 16 signed six-bit scales of a Q3_K block (dequantize_row_q3_K in ggml-quants.c).
inline void q3k_scales(const uint8_t* packed, int sc[16]) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (packed[i] & 0x0f) : (packed[i - 8] >> 4);
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    sc[i] = (low | (high << 4)) - 32;
  }
}

// Each decoder: kBlockElems elements per GGML block, kSub elements per scale, kMaxCode the largest
// code (bounds the int16 accumulation depth of the maddubs path), kSigned for codes that are
// signed bytes (Q8_0 without VNNI: multiplied with the sign trick instead of an offset).
struct DecodeQ4_0 {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = 15;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS32;
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int) {
    const auto* b = reinterpret_cast<const BlockQ4_0*>(p);
    store_nibbles16(b->qs, codes);
    const float d = half_bits_to_float(b->d);
    dw[0] = d;
    mw[0] = -8.0f * d;  // codes are q + 8
  }
};

struct DecodeQ4_1 {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = 15;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kH32;  // block_q8_1.s, as ggml
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int) {
    const auto* b = reinterpret_cast<const BlockQ4_1*>(p);
    store_nibbles16(b->qs, codes);
    dw[0] = half_bits_to_float(b->d);
    mw[0] = half_bits_to_float(b->m);
  }
};

struct DecodeQ5_0 {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = 31;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS32;
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int) {
    const auto* b = reinterpret_cast<const BlockQ5_0*>(p);
    uint32_t qh;
    std::memcpy(&qh, b->qh, 4);
    store32(codes, _mm256_or_si256(nibbles32(b->qs), expand_bits_0x10(qh)));
    const float d = half_bits_to_float(b->d);
    dw[0] = d;
    mw[0] = -16.0f * d;
  }
};

struct DecodeQ5_1 {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = 31;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kH32;
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int) {
    const auto* b = reinterpret_cast<const BlockQ5_1*>(p);
    uint32_t qh;
    std::memcpy(&qh, b->qh, 4);
    store32(codes, _mm256_or_si256(nibbles32(b->qs), expand_bits_0x10(qh)));
    dw[0] = half_bits_to_float(b->d);
    mw[0] = half_bits_to_float(b->m);
  }
};

// Q8_0 with vpdpbusd: codes q + 128 (flip the sign bit) and the offset goes into mw.
struct DecodeQ8_0Offset {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = 255;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS32;
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(p);
    store32(codes, _mm256_xor_si256(load32(reinterpret_cast<const uint8_t*>(b->qs)), _mm256_set1_epi8(-128)));
    const float d = half_bits_to_float(b->d);
    dw[0] = d;
    mw[0] = -128.0f * d;
  }
};

// Q8_0 with maddubs: 255 * 127 * 2 overflows int16, so codes stay signed (sign trick, no offset).
struct DecodeQ8_0Signed {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = 127;
  static constexpr bool kSigned = true;
  static constexpr ActivationArray kS = ActivationArray::kS32;
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(p);
    store32(codes, load32(reinterpret_cast<const uint8_t*>(b->qs)));
    dw[0] = half_bits_to_float(b->d);
    mw[0] = 0.0f;
  }
};

// The 16-element K-quants (Q2_K, Q3_K, Q6_K) fold their sub-block scales per 256-element
// super-block (llama.cpp's ggml_vec_dot_q*_K_q8_K do the same in their own layout):
//   y += (dw * dx) * A + (mw * dx) * B,   A = sum_j a_j * isum_j,   B = sum_j m_j * qsum_j
// with isum_j = sum(c * q) over sub-block j (c the unsigned stored code, q the Q8_K activation
// code), qsum_j = sum(q) over it (ActivationArray::kP16), a_j / m_j the integer sub-block scale /
// minimum and dw / mw the super-block's float factors (Q6_K: a_j = m_j = sc_j, dw = d, mw = -32d;
// Q3_K: a_j = m_j = sc_j, dw = d, mw = -4d; Q2_K: a_j = sc_j & 15, m_j = sc_j >> 4, dw = d,
// mw = -dmin). B is an exact int32 (vpdpwssd over int16 pairs). A is an exact int32 for Q2_K and
// Q3_K: |isum_j| <= 16 * 7 * 127 = 14224 fits the int16 half vpdpwssd multiplies, and
// |A| <= 16 * 32 * 14224 < 2^23 (so its float conversion is exact too); |B| <= 16 * 128 * 2032
// < 2^22. Q6_K's |isum_j| reaches 16 * 63 * 127 = 128016, past int16, so its A is a float chain
// of fmas over j in increasing order (the one order every path uses). Per token, a super-block
// then costs one cvt+fma per sub-block (none for Q2_K/Q3_K past a vpdpwssd) and 8 vpdpwssd plus
// two fmas per super-block, instead of a cvt, a multiply and two fmas per sub-block. Integer
// sums are exact in any order; the float steps are the same in decode, prefill and each token
// alone (batch invariance).
// Tile layout: per super-block and row kFoldWords 32-bit words ([word][row] in the tile):
// a_j (Q2_K/Q3_K: the int16 in the low half, high half zero; Q6_K: float(a_j)), the 8 kP16-style
// pairs (m_2p, m_2p+1), dw, mw.
inline constexpr int kFoldWords = 32, kFoldA = 0, kFoldM = 16, kFoldDw = 24, kFoldMw = 25;

template <class D>
concept FoldedK = requires { D::kIntScale; };

// Writes one row's fold words (stride apart) from its sub-block scales a[16], minimums m[16].
template <bool kIntScale>
inline void store_fold_words(uint32_t* words, int stride, const int a[16], const int m[16], float dw, float mw) {
  for (int j = 0; j < 16; ++j) {
    if constexpr (kIntScale) {
      words[(kFoldA + j) * stride] = static_cast<uint32_t>(a[j]) & 0xffffu;
    } else {
      const float f = static_cast<float>(a[j]);
      std::memcpy(&words[(kFoldA + j) * stride], &f, 4);
    }
  }
  for (int p = 0; p < 8; ++p) words[(kFoldM + p) * stride] = static_cast<uint32_t>(pack_sum_pair(m[2 * p], m[2 * p + 1]));
  std::memcpy(&words[kFoldDw * stride], &dw, 4);
  std::memcpy(&words[kFoldMw * stride], &mw, 4);
}

// Q2_K: element 128h + 32k + l is bits 2k..2k+1 of qs[32h + l]; 16-element sub-blocks with
// scale d * (scales[i] & 15) and minimum -dmin * (scales[i] >> 4).
struct DecodeQ2_K {
  static constexpr int kBlockElems = 256, kSub = 16, kMaxCode = 3;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS16;
  static constexpr bool kIntScale = true;
  // `words`: the block's fold words of this row (see kFoldWords), `stride` apart.
  static void decode(const uint8_t* p, uint8_t* codes, uint32_t* words, int stride) {
    const auto* b = reinterpret_cast<const BlockQ2_K*>(p);
    int a[16], m[16];
    for (int i = 0; i < 16; ++i) {
      a[i] = b->scales[i] & 0x0f;
      m[i] = b->scales[i] >> 4;
    }
    store_fold_words<true>(words, stride, a, m, half_bits_to_float(b->d), -half_bits_to_float(b->dmin));
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = load32(b->qs + 32 * h);
      store32(codes + 128 * h + 0, _mm256_and_si256(q, m3));
      store32(codes + 128 * h + 32, _mm256_and_si256(_mm256_srli_epi16(q, 2), m3));
      store32(codes + 128 * h + 64, _mm256_and_si256(_mm256_srli_epi16(q, 4), m3));
      store32(codes + 128 * h + 96, _mm256_and_si256(_mm256_srli_epi16(q, 6), m3));
    }
  }
};

// Q3_K: the 2 low bits as Q2_K; the third bit of element 128h + 32k + l is bit 4h + k of
// hmask[l] (a clear bit subtracts 4). Codes low | high << 2 in [0, 7] carry an offset of 4.
struct DecodeQ3_K {
  static constexpr int kBlockElems = 256, kSub = 16, kMaxCode = 7;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS16;
  static constexpr bool kIntScale = true;
  static void decode(const uint8_t* p, uint8_t* codes, uint32_t* words, int stride) {
    const auto* b = reinterpret_cast<const BlockQ3_K*>(p);
    const float d = half_bits_to_float(b->d);
    int sc[16];
    q3k_scales(b->scales, sc);
    store_fold_words<true>(words, stride, sc, sc, d, -4.0f * d);
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i hmask = load32(b->hmask);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = load32(b->qs + 32 * h);
      for (int k = 0; k < 4; ++k) {
        const __m256i low = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k)), m3);
        const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << (4 * h + k)));
        const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hmask, bit), bit), _mm256_set1_epi8(4));
        store32(codes + 128 * h + 32 * k, _mm256_or_si256(low, high));
      }
    }
  }
};

// Q4_K / Q5_K: element 64g + l (l < 32) is the low nibble of qs[32g + l], element 64g + 32 + l
// the high one; 32-element sub-blocks with scale d * sc and minimum -dmin * m. Q5_K adds bit
// 2g (2g + 1) of qh[l] as the fifth bit.
template <bool kFive>
struct DecodeQ45_K {
  static constexpr int kBlockElems = 256, kSub = 32, kMaxCode = kFive ? 31 : 15;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS32;
  static void decode(const uint8_t* p, uint8_t* codes, float* dw, float* mw, int stride) {
    uint16_t d_bits, dmin_bits;
    const uint8_t *scales, *qs, *qh = nullptr;
    if constexpr (kFive) {
      const auto* b = reinterpret_cast<const BlockQ5_K*>(p);
      d_bits = b->d, dmin_bits = b->dmin, scales = b->scales, qs = b->qs, qh = b->qh;
    } else {
      const auto* b = reinterpret_cast<const BlockQ4_K*>(p);
      d_bits = b->d, dmin_bits = b->dmin, scales = b->scales, qs = b->qs;
    }
    const float d = half_bits_to_float(d_bits), dmin = half_bits_to_float(dmin_bits);
    uint8_t sc[8], m[8];
    k4_scales_mins(scales, sc, m);
    for (int j = 0; j < 8; ++j) {
      dw[j * stride] = d * static_cast<float>(sc[j]);
      mw[j * stride] = -dmin * static_cast<float>(m[j]);
    }
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i high = kFive ? load32(qh) : _mm256_setzero_si256();
    const __m256i one = _mm256_set1_epi8(1);
    for (int g = 0; g < 4; ++g) {
      const __m256i q = load32(qs + 32 * g);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kFive) {
        // `high` is qh shifted right by 2g: bit 0 of each byte is bit 2g of qh[l], bit 1 is 2g+1.
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(high, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 1), one), 4));
        high = _mm256_srli_epi16(high, 2);
      }
      store32(codes + 64 * g, lo);
      store32(codes + 64 * g + 32, hi);
    }
  }
};

// Q6_K: element 128h + 32k + l has its low 4 bits in the low (k < 2) or high nibble of
// ql[64h + 32(k & 1) + l] and its high 2 bits in bits 2k..2k+1 of qh[32h + l]; codes in [0, 63]
// carry an offset of 32; 16-element sub-blocks with signed 8-bit scales.
struct DecodeQ6_K {
  static constexpr int kBlockElems = 256, kSub = 16, kMaxCode = 63;
  static constexpr bool kSigned = false;
  static constexpr ActivationArray kS = ActivationArray::kS16;
  static constexpr bool kIntScale = false;
  static void decode(const uint8_t* p, uint8_t* codes, uint32_t* words, int stride) {
    const auto* b = reinterpret_cast<const BlockQ6_K*>(p);
    const float d = half_bits_to_float(b->d);
    int sc[16];
    for (int i = 0; i < 16; ++i) sc[i] = b->scales[i];
    store_fold_words<false>(words, stride, sc, sc, d, -32.0f * d);
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load32(b->ql + 64 * h), ql1 = load32(b->ql + 64 * h + 32);
      const __m256i qh = load32(b->qh + 32 * h);
      // High 2 bits moved to bits 4..5 of each byte (16-bit shifts never carry across bytes here).
      const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30);
      const __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30);
      const __m256i h2 = _mm256_and_si256(qh, m30);
      const __m256i h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30);
      store32(codes + 128 * h + 0, _mm256_or_si256(_mm256_and_si256(ql0, m4), h0));
      store32(codes + 128 * h + 32, _mm256_or_si256(_mm256_and_si256(ql1, m4), h1));
      store32(codes + 128 * h + 64, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h2));
      store32(codes + 128 * h + 96, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h3));
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Tiles: S::kLanes rows decoded into [32-element group][8 steps][kLanes rows][4 bytes] codes and
// [sub-block][kLanes] scale arrays, inside the calling thread's scratch.

struct TileBuffers {
  uint8_t* codes;
  float* dw;
  float* mw;
  uint8_t* temp;  // kLanes decoded blocks, row-major
};

template <class S>
size_t tile_scratch_bytes(int64_t cols) {
  const size_t lanes = S::kLanes;
  const size_t codes = lanes * cols;
  const size_t arrays = 2 * (cols / 16) * lanes * sizeof(float);
  const size_t temp = lanes * 256;
  return codes + arrays + temp + 256;
}

template <class S>
TileBuffers tile_buffers(uint8_t* scratch, int64_t cols) {
  TileBuffers t;
  t.codes = scratch;
  t.dw = reinterpret_cast<float*>(scratch + S::kLanes * cols);
  t.mw = t.dw + (cols / 16) * S::kLanes;
  t.temp = reinterpret_cast<uint8_t*>(t.mw + (cols / 16) * S::kLanes);
  return t;
}

// Optional fast path of a type on an ISA: for GGML block b of a full tile, for_each_sub(b, fn)
// calls fn(sub_block_in_block, steps, dw, mw) with the sub-block's kSub/4 step vectors and its
// scale vectors, loaded and transposed in registers straight from the weight rows (no temporary
// buffer), in increasing sub-block order (batch invariance: decode_tile sums in call order, the
// prefill path in index order). Specialised in matmul_simd_avx512.h and matmul_avx2.cpp; `kAvailable` false means
// "use the decoder".
template <class S, class D>
struct FastTile {
  static constexpr bool kAvailable = false;
};

// for_each_sub of loaders whose blocks are one 32-element sub-block, from their load().
template <class Loader, class S>
struct OneSubBlock : Loader {
  using Loader::Loader;
  template <class Fn>
  void for_each_sub(int64_t b, Fn&& fn) const {
    typename S::VI steps[8];
    typename S::VF dw, mw;
    this->load(b, steps, dw, mw);
    fn(0, steps, dw, mw);
  }
};

// Prefetches the next slice of the rows after the tile: the tile reads block b of every row in
// turn, 16 streams a row apart, which the hardware prefetchers follow poorly; decode is bound by
// memory latency. The next tile's rows (contiguous after this one) arrive one tile ahead.
class NextTilePrefetch {
 public:
  NextTilePrefetch(const WeightMatrix& w, int64_t r0, int lanes, int64_t n_blocks)
      : next_(w.row(r0) + lanes * w.row_bytes),
        end_(w.data + w.rows * w.row_bytes),
        slice_((static_cast<int64_t>(lanes * w.row_bytes) / n_blocks + 63) / 64 * 64),
        to_l1_(lanes * w.row_bytes <= 12 * 1024),
        enabled_(lanes * w.row_bytes <= 64 * 1024) {}
  void step() {
    if (!enabled_) return;
    if (to_l1_) {
      for (int64_t offset = 0; offset < slice_ && next_ < end_; offset += 64, next_ += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(next_), _MM_HINT_T0);
      }
    } else {
      for (int64_t offset = 0; offset < slice_ && next_ < end_; offset += 64, next_ += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(next_), _MM_HINT_T1);
      }
    }
  }

 private:
  const uint8_t* next_;
  const uint8_t* end_;
  int64_t slice_;
  // Two tiles of long rows (1536 columns) do not fit in L1 next to the activations: those are
  // prefetched to L2 only.
  bool to_l1_;
  // Tiles of very long rows (over 64 KB: 16 rows of 8192 Q4_K/Q6_K/Q8_0 columns) are left to the
  // hardware prefetchers, which follow each row's long sequential run; software prefetches on
  // top measured 10-20% slower there (kernels_bench 8192to2048 decode), while below they help
  // by as much (2048to8192).
  bool enabled_;
};

// build_tile of the folded K-quants: codes as the other types, and per super-block the fold words
// ([kFoldWords][kLanes] 32-bit words from tb.dw on; the dw and mw arrays hold 32 words per 256
// columns together).
template <class S, class D>
void build_fold_tile(const WeightMatrix& w, int64_t r0, int nr, const TileBuffers& tb) {
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int L = S::kLanes, E = D::kBlockElems, G = E / 32;
  static_assert(E == 256 && D::kSub == 16);
  const int64_t n_blocks = w.cols / E;
  uint8_t* fold = reinterpret_cast<uint8_t*>(tb.dw);
  constexpr size_t kWordRow = L * 4;  // bytes of one fold word for the tile's rows
  if constexpr (FastTile<S, D>::kAvailable) {
    if (nr == L) {
      const FastTile<S, D> loader(w, r0);
      NextTilePrefetch prefetch(w, r0, L, n_blocks);
      for (int64_t b = 0; b < n_blocks; ++b) {
        prefetch.step();
        uint8_t* words = fold + b * kFoldWords * kWordRow;
        VF dw, mw;
        VI m_even = S::zero();
        loader.fold_block(
            b,
            [&](int s, const VI* steps, VI a, VI m) {
              const int64_t sub = b * 16 + s;
              for (int j = 0; j < 4; ++j) S::store(tb.codes + (sub * 4 + j) * L * 4, steps[j]);
              if constexpr (D::kIntScale) {
                S::store(words + (kFoldA + s) * kWordRow, S::low16(a));
              } else {
                S::storef(reinterpret_cast<float*>(words + (kFoldA + s) * kWordRow), S::cvt(a), L);
              }
              if (s % 2 == 0) {
                m_even = m;
              } else {
                S::store(words + (kFoldM + s / 2) * kWordRow, S::pair16(m_even, m));
              }
            },
            dw, mw);
        S::storef(reinterpret_cast<float*>(words + kFoldDw * kWordRow), dw, L);
        S::storef(reinterpret_cast<float*>(words + kFoldMw * kWordRow), mw, L);
      }
      return;
    }
  }
  const size_t block_bytes = w.traits->block_bytes;
  for (int lane = nr; lane < L; ++lane) std::memset(tb.temp + lane * E, 0, E);
  const uint8_t* rows[L];
  for (int lane = 0; lane < nr; ++lane) rows[lane] = w.row(r0 + lane);
  NextTilePrefetch prefetch(w, r0, L, n_blocks);
  for (int64_t b = 0; b < n_blocks; ++b) {
    prefetch.step();
    uint32_t* words = reinterpret_cast<uint32_t*>(fold + b * kFoldWords * kWordRow);
    for (int lane = 0; lane < nr; ++lane) D::decode(rows[lane] + b * block_bytes, tb.temp + lane * E, words + lane, L);
    for (int lane = nr; lane < L; ++lane) {
      for (int k = 0; k < kFoldWords; ++k) words[k * L + lane] = 0;
    }
    for (int g = 0; g < G; ++g) S::transpose_codes(tb.temp + g * 32, E, tb.codes + (b * G + g) * 8 * L * 4);
  }
}

template <class S, class D>
void build_tile(const WeightMatrix& w, int64_t r0, int nr, const TileBuffers& tb) {
  constexpr int L = S::kLanes, E = D::kBlockElems, G = E / 32, kSubs = E / D::kSub;
  const int64_t n_blocks = w.cols / E;
  // The folded K-quants build their own tile; the branch keeps the generic code below (D::decode)
  // from being instantiated for them.
  if constexpr (FoldedK<D>) {
    build_fold_tile<S, D>(w, r0, nr, tb);
  } else {
    if constexpr (FastTile<S, D>::kAvailable) {
      if (nr == L) {
        const FastTile<S, D> loader(w, r0);
        NextTilePrefetch prefetch(w, r0, L, n_blocks);
        for (int64_t b = 0; b < n_blocks; ++b) {
          prefetch.step();
          loader.for_each_sub(b, [&](int s, const typename S::VI* steps, typename S::VF dw, typename S::VF mw) {
            const int64_t sub = b * kSubs + s;
            for (int j = 0; j < D::kSub / 4; ++j) S::store(tb.codes + (sub * (D::kSub / 4) + j) * L * 4, steps[j]);
            S::storef(tb.dw + sub * L, dw, L);
            S::storef(tb.mw + sub * L, mw, L);
          });
        }
        return;
      }
    }
    const size_t block_bytes = w.traits->block_bytes;
    for (int lane = nr; lane < L; ++lane) std::memset(tb.temp + lane * E, 0, E);
    const uint8_t* rows[L];
    for (int lane = 0; lane < nr; ++lane) rows[lane] = w.row(r0 + lane);
    NextTilePrefetch prefetch(w, r0, L, n_blocks);
    for (int64_t b = 0; b < n_blocks; ++b) {
      prefetch.step();
      float* dw = tb.dw + b * kSubs * L;
      float* mw = tb.mw + b * kSubs * L;
      for (int lane = 0; lane < nr; ++lane) D::decode(rows[lane] + b * block_bytes, tb.temp + lane * E, dw + lane, mw + lane, L);
      for (int lane = nr; lane < L; ++lane) {
        for (int s = 0; s < kSubs; ++s) dw[s * L + lane] = mw[s * L + lane] = 0.0f;
      }
      for (int g = 0; g < G; ++g) S::transpose_codes(tb.temp + g * 32, E, tb.codes + (b * G + g) * 8 * L * 4);
    }
  }
}

// int16 accumulation depth of the maddubs path: each maddubs lane holds at most
// 2 * kMaxCode * 127, and `depth` of them must stay below 32767.
constexpr int maddubs_depth(int max_code, int steps) {
  int depth = 1;
  while (depth * 2 <= steps && 2 * depth * 2 * max_code * 127 <= 32767) depth *= 2;
  return depth;
}

// T tokens (lanes t0.. of one activation group of kG lanes) times the tile. `xc` points at the
// group's codes plus 4 * t0, `xd`/`xs` at its arrays plus t0.
// Columns per pass over a tile in prefill: a 16-row tile of 512 columns (8 KB of codes) and one
// token group's codes for them (4 KB) stay in L1; inputs wider than 768 (1536) are done in passes
// that continue the running sums left in y (see tile_times_tokens).
constexpr int64_t kColumnChunk = 512;
// The folded K-quants (a 1024-column tile is 16 KB of codes + 8 KB of fold words, with 8 KB of a
// group's codes still inside a 48 KB L1) take longer passes: fewer reloads of the running sums.
constexpr int64_t kFoldColumnChunk = 1024;

// The part of a tile and of the activations that one pass covers.
struct TilePass {
  const uint8_t* codes;
  const float* dw;
  const float* mw;
  int64_t n_subs;  // sub-blocks in the pass
};

// The exact integer dots of one sub-block (kSub / 4 steps of the tile at wp) with T tokens.
template <class S, class D, int T, int kG>
inline void sub_isums(const uint8_t* wp, const int8_t* xc, typename S::VI isum[T]) {
  using VI = typename S::VI;
  constexpr int L = S::kLanes;
  constexpr int kSteps = D::kSub / 4;
  constexpr int kDepth = maddubs_depth(D::kMaxCode, kSteps);
  if constexpr (S::kVnni) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) isum[t] = S::zero();
#pragma GCC unroll 8
    for (int j = 0; j < kSteps; ++j) {
      const VI wv = S::load(wp + j * L * 4);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) isum[t] = S::dpbusd(isum[t], wv, xc + j * 4 * kG + t * 4);
    }
  } else if constexpr (D::kSigned) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) isum[t] = S::zero();
#pragma GCC unroll 8
    for (int j = 0; j < kSteps; ++j) {
      const VI wv = S::load(wp + j * L * 4);
      const VI wabs = S::abs8(wv);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const VI xv = S::sign8(S::bcast32(xc + j * 4 * kG + t * 4), wv);
        isum[t] = S::add32(isum[t], S::madd_ones(S::maddubs(wabs, xv)));
      }
    }
  } else {
    VI i16[T];
#pragma GCC unroll 8
    for (int j = 0; j < kSteps; ++j) {
      const VI wv = S::load(wp + j * L * 4);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const VI p = S::maddubs(wv, S::bcast32(xc + j * 4 * kG + t * 4));
        i16[t] = (j % kDepth == 0) ? p : S::add16(i16[t], p);
        if (j % kDepth == kDepth - 1) {
          isum[t] = (j == kDepth - 1) ? S::madd_ones(i16[t]) : S::add32(isum[t], S::madd_ones(i16[t]));
        }
      }
    }
  }
}

template <class S, class D, int T, int kG, bool kContinue>
void tile_times_tokens(const TilePass& tb, const int8_t* xc, const float* xd, const float* xs, float* y,
                       int64_t y_stride, int nr) {
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int L = S::kLanes;
  constexpr int kSteps = D::kSub / 4;
  // A later column pass continues each output's running sum from y rather than adding a separate
  // partial sum to it: every token then sees the one chain of FMAs over the sub-blocks that the
  // one-token decode kernel (decode_tile, a single pass) computes, so a batched row is
  // bit-identical to the same token evaluated alone (batch invariance; speculative verification
  // and batched serving rely on it).
  VF acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = kContinue ? S::loadf_partial(y + t * y_stride, nr) : S::zerof();
  const uint8_t* wp = tb.codes;
  const float* dwp = tb.dw;
  const float* mwp = tb.mw;
  const int64_t n_subs = tb.n_subs;
  for (int64_t sub = 0; sub < n_subs; ++sub) {
    VI isum[T];
    sub_isums<S, D, T, kG>(wp, xc, isum);
    const VF dw = S::loadf(dwp), mw = S::loadf(mwp);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      acc[t] = S::fmadd(S::cvt(isum[t]), S::mul_bcast(dw, xd + sub * kG + t), acc[t]);
      acc[t] = S::fmadd_bcast(mw, xs + sub * kG + t, acc[t]);
    }
    wp += kSteps * L * 4;
    xc += kSteps * kG * 4;
    dwp += L;
    mwp += L;
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) S::storef(y + t * y_stride, acc[t], nr);
}

// tile_times_tokens of the folded K-quants (the formula above kFoldWords): tb.dw points at the
// pass's fold words, xd at the group's kD16 array and xs at its kP16 words (both of the pass).
template <class S, class D, int T, int kG, bool kContinue>
void tile_times_tokens_fold(const TilePass& tb, const int8_t* xc, const float* xd, const float* xs, float* y,
                            int64_t y_stride, int nr) {
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int L = S::kLanes;
  VF acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = kContinue ? S::loadf_partial(y + t * y_stride, nr) : S::zerof();
  const uint8_t* wp = tb.codes;
  const uint8_t* fw = reinterpret_cast<const uint8_t*>(tb.dw);
  const int8_t* xp = reinterpret_cast<const int8_t*>(xs);
  constexpr int64_t kWordRow = L * 4;
  const int64_t n_blocks = tb.n_subs / 16;
  for (int64_t b = 0; b < n_blocks; ++b) {
    VI ia[T];
    VF fa[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      if constexpr (D::kIntScale) {
        ia[t] = S::zero();
      } else {
        fa[t] = S::zerof();
      }
    }
    for (int j = 0; j < 16; ++j) {
      VI isum[T];
      sub_isums<S, D, T, kG>(wp, xc, isum);
      if constexpr (D::kIntScale) {
        const VI a = S::load(fw + (kFoldA + j) * kWordRow);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) ia[t] = S::dpwssd(ia[t], isum[t], a);
      } else {
        const VF a = S::loadf(reinterpret_cast<const float*>(fw + (kFoldA + j) * kWordRow));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) fa[t] = S::fmadd(S::cvt(isum[t]), a, fa[t]);
      }
      wp += 4 * L * 4;
      xc += 4 * kG * 4;
    }
    VI ib[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) ib[t] = S::zero();
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      const VI m = S::load(fw + (kFoldM + p) * kWordRow);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ib[t] = S::dpwssd_bcast(ib[t], m, xp + (p * kG + t) * 4);
    }
    const VF dw = S::loadf(reinterpret_cast<const float*>(fw + kFoldDw * kWordRow));
    const VF mw = S::loadf(reinterpret_cast<const float*>(fw + kFoldMw * kWordRow));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const VF sum_a = D::kIntScale ? S::cvt(ia[t]) : fa[t];
      acc[t] = S::fmadd(sum_a, S::mul_bcast(dw, xd + b * 16 * kG + t), acc[t]);
      acc[t] = S::fmadd(S::cvt(ib[t]), S::mul_bcast(mw, xd + b * 16 * kG + t), acc[t]);
    }
    fw += kFoldWords * kWordRow;
    xp += 8 * kG * 4;
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) S::storef(y + t * y_stride, acc[t], nr);
}

// Integer dot of one sub-block (kSub / 4 steps in registers) with one token's codes.
template <class S, class D, int kG>
typename S::VI dot_steps_one_token(const typename S::VI* w, const int8_t* xc) {
  using VI = typename S::VI;
  constexpr int kSteps = D::kSub / 4;
  constexpr int kDepth = maddubs_depth(D::kMaxCode, kSteps);
  if constexpr (S::kVnni) {
    // Two chains, so consecutive vpdpbusd do not wait on each other's result.
    VI even = S::zero(), odd = S::zero();
#pragma GCC unroll 8
    for (int j = 0; j < kSteps; j += 2) {
      even = S::dpbusd(even, w[j], xc + j * 4 * kG);
      odd = S::dpbusd(odd, w[j + 1], xc + (j + 1) * 4 * kG);
    }
    return S::add32(even, odd);
  } else if constexpr (D::kSigned) {
    VI sum = S::zero();
#pragma GCC unroll 8
    for (int j = 0; j < kSteps; ++j) {
      const VI xv = S::sign8(S::bcast32(xc + j * 4 * kG), w[j]);
      sum = S::add32(sum, S::madd_ones(S::maddubs(S::abs8(w[j]), xv)));
    }
    return sum;
  } else {
    VI sum = S::zero(), i16 = S::zero();
#pragma GCC unroll 8
    for (int j = 0; j < kSteps; ++j) {
      const VI p = S::maddubs(w[j], S::bcast32(xc + j * 4 * kG));
      i16 = (j % kDepth == 0) ? p : S::add16(i16, p);
      if (j % kDepth == kDepth - 1) sum = (j == kDepth - 1) ? S::madd_ones(i16) : S::add32(sum, S::madd_ones(i16));
    }
    return sum;
  }
}

// Decode (one token, activation groups of 1) on a full tile of a type with a FastTile loader:
// blocks go from the weight rows into registers and straight into the dot products; nothing is
// stored but the outputs.
template <class S, class D>
void decode_tile(const WeightMatrix& w, int64_t r0, const int8_t* xc, const float* xd, const float* xs, float* y) {
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int L = S::kLanes;
  constexpr int kSubs = D::kBlockElems / D::kSub;
  const int64_t n_blocks = w.cols / D::kBlockElems;
  const FastTile<S, D> loader(w, r0);
  NextTilePrefetch prefetch(w, r0, L, n_blocks);
  VF acc = S::zerof();
  for (int64_t b = 0; b < n_blocks; ++b) {
    prefetch.step();
    loader.for_each_sub(b, [&](int s, const VI* steps, VF dw, VF mw) {
      const int64_t sub = b * kSubs + s;
      const VI isum = dot_steps_one_token<S, D, 1>(steps, xc + sub * D::kSub);
      acc = S::fmadd(S::cvt(isum), S::mul_bcast(dw, xd + sub), acc);
      acc = S::fmadd_bcast(mw, xs + sub, acc);
    });
  }
  S::storef(y, acc, L);
}

// decode_tile of the folded K-quants (xd: the token's kD16 array, xs: its kP16 words): the same
// integer sums and float steps as tile_times_tokens_fold, in registers.
template <class S, class D>
void decode_fold_tile(const WeightMatrix& w, int64_t r0, const int8_t* xc, const float* xd, const float* xs, float* y) {
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int L = S::kLanes;
  const int64_t n_blocks = w.cols / D::kBlockElems;
  const FastTile<S, D> loader(w, r0);
  NextTilePrefetch prefetch(w, r0, L, n_blocks);
  const int8_t* xp = reinterpret_cast<const int8_t*>(xs);
  VF acc = S::zerof();
  for (int64_t b = 0; b < n_blocks; ++b) {
    prefetch.step();
    VI ia = S::zero(), ib = S::zero(), m_even = S::zero();
    VF fa = S::zerof();
    VF dw, mw;
    loader.fold_block(
        b,
        [&](int s, const VI* steps, VI a, VI m) {
          const VI isum = dot_steps_one_token<S, D, 1>(steps, xc + (b * 16 + s) * 16);
          if constexpr (D::kIntScale) {
            ia = S::dpwssd(ia, isum, S::low16(a));
          } else {
            fa = S::fmadd(S::cvt(isum), S::cvt(a), fa);
          }
          if (s % 2 == 0) {
            m_even = m;
          } else {
            ib = S::dpwssd_bcast(ib, S::pair16(m_even, m), xp + (b * 8 + s / 2) * 4);
          }
        },
        dw, mw);
    const VF sum_a = D::kIntScale ? S::cvt(ia) : fa;
    acc = S::fmadd(sum_a, S::mul_bcast(dw, xd + b * 16), acc);
    acc = S::fmadd(S::cvt(ib), S::mul_bcast(mw, xd + b * 16), acc);
  }
  S::storef(y, acc, L);
}

template <class S, class D, bool kContinue>
void tokens_dispatch(int count, int lanes, const TilePass& tb, const int8_t* xc, const float* xd, const float* xs,
                     float* y, int64_t y_stride, int nr) {
  if constexpr (FoldedK<D>) {
    if (lanes == 1) {
      tile_times_tokens_fold<S, D, 1, 1, kContinue>(tb, xc, xd, xs, y, y_stride, nr);
      return;
    }
  } else if (lanes == 1) {  // a single token
    tile_times_tokens<S, D, 1, 1, kContinue>(tb, xc, xd, xs, y, y_stride, nr);
    return;
  }
  switch (count) {
#define FRUGAL_TOKENS_CASE(n)                                                                    \
  case n:                                                                                        \
    if constexpr (n <= S::kMaxTokens && FoldedK<D>) {                                            \
      tile_times_tokens_fold<S, D, n, kTokenGroup, kContinue>(tb, xc, xd, xs, y, y_stride, nr);\
    } else if constexpr (n <= S::kMaxTokens) {                                                   \
      tile_times_tokens<S, D, n, kTokenGroup, kContinue>(tb, xc, xd, xs, y, y_stride, nr);     \
    }                                                                                            \
    return;
    FRUGAL_TOKENS_CASE(1)
    FRUGAL_TOKENS_CASE(2)
    FRUGAL_TOKENS_CASE(3)
    FRUGAL_TOKENS_CASE(4)
    FRUGAL_TOKENS_CASE(5)
    FRUGAL_TOKENS_CASE(6)
    FRUGAL_TOKENS_CASE(7)
    FRUGAL_TOKENS_CASE(8)
#undef FRUGAL_TOKENS_CASE
  }
}

template <class S, class D>
void quant_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                int64_t y_stride, uint8_t* scratch) {
  constexpr int L = S::kLanes;
  constexpr ActivationArray kD = D::kSub == 16 ? ActivationArray::kD16 : ActivationArray::kD32;
  // The folded K-quants read the code-sum pairs (one word per 32 columns) instead of kS16.
  constexpr ActivationArray kXs = FoldedK<D> ? ActivationArray::kP16 : D::kS;
  const TileBuffers tb = tile_buffers<S>(scratch, w.cols);
  const int64_t n_groups = a.n_groups();
  constexpr int64_t kChunk = FoldedK<D> ? kFoldColumnChunk : kColumnChunk;
  const int64_t chunk = w.cols <= kChunk * 3 / 2 || a.n_tokens == 1 ? w.cols : kChunk;
  for (int64_t rt = r0; rt < r1; rt += L) {
    const int nr = static_cast<int>(std::min<int64_t>(L, r1 - rt));
    if constexpr (FastTile<S, D>::kAvailable) {
      if (a.n_tokens == 1 && nr == L) {
        if constexpr (FoldedK<D>) {
          decode_fold_tile<S, D>(w, rt, a.codes(0), a.array(0, kD), a.array(0, kXs), y + rt);
        } else {
          decode_tile<S, D>(w, rt, a.codes(0), a.array(0, kD), a.array(0, D::kS), y + rt);
        }
        continue;
      }
    }
    build_tile<S, D>(w, rt, nr, tb);
    for (int64_t c0 = 0; c0 < w.cols; c0 += chunk) {
      const int64_t cols = std::min(chunk, w.cols - c0);
      const int64_t sub0 = c0 / D::kSub;
      // Folded K-quants: pass.dw is the pass's fold words (chunks are whole super-blocks).
      const TilePass pass = FoldedK<D> ? TilePass{tb.codes + c0 * L, tb.dw + (c0 / 256) * kFoldWords * L, nullptr, cols / D::kSub}
                                       : TilePass{tb.codes + c0 * L, tb.dw + sub0 * L, tb.mw + sub0 * L, cols / D::kSub};
      const int64_t xs0 = FoldedK<D> ? c0 / 32 : sub0;  // the pass's first kP16 word or kS sub-block
      for (int64_t g = 0; g < n_groups; ++g) {
        const int in_group = static_cast<int>(std::min<int64_t>(a.lanes, a.n_tokens - g * a.lanes));
        const int8_t* codes = a.codes(g) + c0 * a.lanes;
        const float* xd = a.array(g, kD) + sub0 * a.lanes;
        const float* xs = a.array(g, kXs) + xs0 * a.lanes;
        for (int t0 = 0; t0 < in_group; t0 += S::kMaxTokens) {
          const int count = std::min(S::kMaxTokens, in_group - t0);
          float* yt = y + (g * a.lanes + t0) * y_stride + rt;
          if (c0 == 0) {
            tokens_dispatch<S, D, false>(count, a.lanes, pass, codes + 4 * t0, xd + t0, xs + t0, yt, y_stride, nr);
          } else {
            tokens_dispatch<S, D, true>(count, a.lanes, pass, codes + 4 * t0, xd + t0, xs + t0, yt, y_stride, nr);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Float weights (F32/F16/BF16) with float activations: kFloatRows rows x kFloatTokens tokens of
// dot products along the columns, converting F16 with vcvtph2ps and BF16 by a 16-bit shift.

struct LoadF32 {
  static constexpr int kBytes = 4;
  template <class S>
  static typename S::VF load(const uint8_t* row, int64_t k) { return S::loadf(reinterpret_cast<const float*>(row) + k); }
  static float scalar(const uint8_t* row, int64_t k) { return reinterpret_cast<const float*>(row)[k]; }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  template <class S>
  static typename S::VF load(const uint8_t* row, int64_t k) { return S::load_f16(reinterpret_cast<const uint16_t*>(row) + k); }
  static float scalar(const uint8_t* row, int64_t k) { return half_bits_to_float(reinterpret_cast<const uint16_t*>(row)[k]); }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  template <class S>
  static typename S::VF load(const uint8_t* row, int64_t k) { return S::load_bf16(reinterpret_cast<const uint16_t*>(row) + k); }
  static float scalar(const uint8_t* row, int64_t k) {
    const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[k]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
};

template <class S, class Load, int R, int T>
void float_block(const WeightMatrix& w, int64_t r, const float* x, int64_t x_stride, float* y, int64_t y_stride) {
  using VF = typename S::VF;
  constexpr int L = S::kLanes;
  const int64_t k_vec = w.cols / L * L;
  const uint8_t* rows[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) rows[i] = w.row(r + i);
  VF acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[i][t] = S::zerof();
  for (int64_t k = 0; k < k_vec; k += L) {
    {
      // Rows are short (576 columns: 36 iterations), so the hardware prefetcher, which starts
      // anew at each block, left the stream at about half the memory bandwidth when a row block
      // serves several tokens, and below it for one: fetch the same columns of the next block of
      // rows (the rows are contiguous; a prefetch past the end of the matrix does not fault).
      const size_t ahead = static_cast<size_t>(R) * w.row_bytes + static_cast<size_t>(k) * Load::kBytes;
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) _mm_prefetch(reinterpret_cast<const char*>(rows[i]) + ahead, _MM_HINT_T0);
    }
    VF wv[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) wv[i] = Load::template load<S>(rows[i], k);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const VF xv = S::loadf(x + t * x_stride + k);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) acc[i][t] = S::fmadd(wv[i], xv, acc[i][t]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      float sum = S::hsum(acc[i][t]);
      for (int64_t k = k_vec; k < w.cols; ++k) sum += Load::scalar(rows[i], k) * x[t * x_stride + k];
      y[t * y_stride + r + i] = sum;
    }
  }
}

// R rows x nt tokens (1 <= nt <= 8) through float_block's T = nt instance.
template <class S, class Load, int R>
void float_block_tokens(const WeightMatrix& w, int64_t r, const float* x, int64_t x_stride, float* y, int64_t y_stride,
                        int64_t nt) {
  switch (nt) {
    case 1: return float_block<S, Load, R, 1>(w, r, x, x_stride, y, y_stride);
    case 2: return float_block<S, Load, R, 2>(w, r, x, x_stride, y, y_stride);
    case 3: return float_block<S, Load, R, 3>(w, r, x, x_stride, y, y_stride);
    case 4: return float_block<S, Load, R, 4>(w, r, x, x_stride, y, y_stride);
    case 5: return float_block<S, Load, R, 5>(w, r, x, x_stride, y, y_stride);
    case 6: return float_block<S, Load, R, 6>(w, r, x, x_stride, y, y_stride);
    case 7: return float_block<S, Load, R, 7>(w, r, x, x_stride, y, y_stride);
    default: return float_block<S, Load, R, 8>(w, r, x, x_stride, y, y_stride);
  }
}

// Every (row, token) dot product is the same FMA chain over the columns whatever the block shape
// (one vector accumulator, columns in order, then hsum and the scalar tail), so a token's result
// does not depend on the batch around it (batch invariance, docs/SPECULATIVE.md).
template <class S, class Load>
void float_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride, int64_t n_tokens,
                float* y, int64_t y_stride) {
  if constexpr (S::kFloatSmallBatchRows > 0) {
    // A few tokens (decoding; verifying a speculative draft; a batched decode step): up to 8
    // tokens in one pass over a block of rows, so the weights' conversion is shared and overlaps
    // their stream from memory.
    // Up to 32 tokens run in groups of at most 8 (balanced) over each block of rows.
    constexpr int R = S::kFloatSmallBatchRows;
    if (n_tokens <= 32) {
      const int64_t groups = (n_tokens + 7) / 8;
      auto all_tokens = [&](auto rows_per_block, int64_t r) {
        for (int64_t g = 0, t = 0; g < groups; ++g) {
          const int64_t nt = (n_tokens - t) / (groups - g);
          float_block_tokens<S, Load, decltype(rows_per_block)::value>(w, r, x + t * x_stride, x_stride, y + t * y_stride,
                                                                        y_stride, nt);
          t += nt;
        }
      };
      int64_t r = r0;
      for (; r + R <= r1; r += R) all_tokens(std::integral_constant<int, R>(), r);
      for (; r < r1; ++r) all_tokens(std::integral_constant<int, 1>(), r);
      return;
    }
  }
  constexpr int R = S::kFloatRows, T = S::kFloatTokens;
  // Token chunks keep the activations a row block meets in L2.
  constexpr int64_t kTokenChunk = 64;
  for (int64_t tc = 0; tc < n_tokens; tc += kTokenChunk) {
    const int64_t tend = std::min(n_tokens, tc + kTokenChunk);
    int64_t r = r0;
    for (; r + R <= r1; r += R) {
      int64_t t = tc;
      for (; t + T <= tend; t += T) {
        float_block<S, Load, R, T>(w, r, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
      }
      for (; t < tend; ++t) float_block<S, Load, R, 1>(w, r, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
    }
    for (; r < r1; ++r) {
      for (int64_t t = tc; t < tend; ++t) {
        float_block<S, Load, 1, 1>(w, r, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers (AVX2; bit-identical to quantize_activations_reference).

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int hsum8_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Packs 4 vectors of 8 int32 codes in [-127, 127] into 32 bytes in element order.
inline __m256i pack_codes(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
  const __m256i p01 = _mm256_packs_epi32(q0, q1), p23 = _mm256_packs_epi32(q2, q3);
  const __m256i bytes = _mm256_packs_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Writes 32 codes (columns k0..k0+31) of token `lane` into a group's interleaved code array.
inline void scatter_codes(int8_t* group_codes, int lanes, int64_t k0, int lane, __m256i codes) {
  if (lanes == 1) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(group_codes + k0), codes);
    return;
  }
  alignas(32) int32_t words[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(words), codes);
  int32_t* dst = reinterpret_cast<int32_t*>(group_codes) + (k0 / 4) * lanes + lane;
  for (int j = 0; j < 8; ++j) dst[j * lanes] = words[j];
}

inline void quantize_token_block32(const float* x, int64_t cols, int lanes, int lane, int8_t* codes, float* d32,
                                   float* s32, float* h32) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* xb = x + b * 32;
    const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8), v2 = _mm256_loadu_ps(xb + 16),
                 v3 = _mm256_loadu_ps(xb + 24);
    const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                                   _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
    const float amax = hmax8(m);
    const float d = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), q1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id)),
                  q2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), q3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
    const int sum = hsum8_epi32(_mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3)));
    scatter_codes(codes, lanes, b * 32, lane, pack_codes(q0, q1, q2, q3));
    const float d_half = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    d32[b * lanes + lane] = d_half;
    s32[b * lanes + lane] = d_half * static_cast<float>(sum);
    h32[b * lanes + lane] = _cvtsh_ss(_cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT));
  }
}

inline void quantize_token_q8k(const float* x, int64_t cols, int lanes, int lane, int8_t* codes, float* d32,
                               float* s32, float* d16, float* s16, int32_t* p16) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < cols / 256; ++b) {
    const float* xb = x + b * 256;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 256; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xb + i), abs_mask));
    const float amax = hmax8(m);
    // The first element of largest magnitude keeps its sign (quantize_row_q8_K_ref).
    float max = 0.0f;
    if (amax != 0.0f) {
      const __m256 target = _mm256_set1_ps(amax);
      for (int i = 0; i < 256; i += 8) {
        const __m256 v = _mm256_loadu_ps(xb + i);
        const int hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, abs_mask), target, _CMP_EQ_OQ));
        if (hits) {
          max = xb[i + __builtin_ctz(static_cast<unsigned>(hits))];
          break;
        }
      }
    }
    const float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
    const float d = amax != 0.0f ? 1.0f / iscale : 0.0f;
    const __m256 vs = _mm256_set1_ps(iscale);
    const __m256i limit = _mm256_set1_epi32(127);
    for (int c = 0; c < 8; ++c) {  // 32 columns at a time
      __m256i q[4];
      for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * c + 8 * i), vs)), limit);
      }
      const int sum_a = hsum8_epi32(_mm256_add_epi32(q[0], q[1]));
      const int sum_b = hsum8_epi32(_mm256_add_epi32(q[2], q[3]));
      scatter_codes(codes, lanes, b * 256 + 32 * c, lane, pack_codes(q[0], q[1], q[2], q[3]));
      const int64_t i16 = b * 16 + 2 * c, i32 = b * 8 + c;
      d16[i16 * lanes + lane] = d;
      d16[(i16 + 1) * lanes + lane] = d;
      s16[i16 * lanes + lane] = d * static_cast<float>(sum_a);
      s16[(i16 + 1) * lanes + lane] = d * static_cast<float>(sum_b);
      d32[i32 * lanes + lane] = d;
      s32[i32 * lanes + lane] = d * static_cast<float>(sum_a + sum_b);
      p16[i32 * lanes + lane] = pack_sum_pair(sum_a, sum_b);
    }
  }
}

inline void zero_lane(const QuantizedActivations& out, int64_t group, int lane) {
  int32_t* words = reinterpret_cast<int32_t*>(out.codes(group));
  for (int64_t k4 = 0; k4 < out.cols / 4; ++k4) words[k4 * out.lanes + lane] = 0;
  float* arrays = out.array(group, ActivationArray::kD32);
  const int64_t n = (reinterpret_cast<float*>(out.data + (group + 1) * out.group_bytes) - arrays) / out.lanes;
  for (int64_t i = 0; i < n; ++i) arrays[i * out.lanes + lane] = 0.0f;
}

void quantize_simd(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                   const QuantizedActivations& out) {
  for (int64_t g = group_begin; g < group_end; ++g) {
    int8_t* codes = out.codes(g);
    for (int lane = 0; lane < out.lanes; ++lane) {
      const int64_t t = g * out.lanes + lane;
      if (t >= out.n_tokens) {
        zero_lane(out, g, lane);
      } else if (out.format == ActivationFormat::kQ8Block32) {
        quantize_token_block32(x + t * x_stride, out.cols, out.lanes, lane, codes, out.array(g, ActivationArray::kD32),
                               out.array(g, ActivationArray::kS32), out.array(g, ActivationArray::kH32));
      } else {
        quantize_token_q8k(x + t * x_stride, out.cols, out.lanes, lane, codes, out.array(g, ActivationArray::kD32),
                           out.array(g, ActivationArray::kS32), out.array(g, ActivationArray::kD16),
                           out.array(g, ActivationArray::kS16),
                           reinterpret_cast<int32_t*>(out.array(g, ActivationArray::kP16)));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

template <class S>
KernelTable make_kernel_table(Isa isa) {
  KernelTable t{};
  t.isa = isa;
  t.row_tile = S::kLanes;
  t.quantize = quantize_simd;
  t.quant_rows[kKernelQ4_0] = quant_rows<S, DecodeQ4_0>;
  t.quant_rows[kKernelQ4_1] = quant_rows<S, DecodeQ4_1>;
  t.quant_rows[kKernelQ5_0] = quant_rows<S, DecodeQ5_0>;
  t.quant_rows[kKernelQ5_1] = quant_rows<S, DecodeQ5_1>;
  if constexpr (S::kVnni) {
    t.quant_rows[kKernelQ8_0] = quant_rows<S, DecodeQ8_0Offset>;
  } else {
    t.quant_rows[kKernelQ8_0] = quant_rows<S, DecodeQ8_0Signed>;
  }
  t.quant_rows[kKernelQ2_K] = quant_rows<S, DecodeQ2_K>;
  t.quant_rows[kKernelQ3_K] = quant_rows<S, DecodeQ3_K>;
  t.quant_rows[kKernelQ4_K] = quant_rows<S, DecodeQ45_K<false>>;
  t.quant_rows[kKernelQ5_K] = quant_rows<S, DecodeQ45_K<true>>;
  t.quant_rows[kKernelQ6_K] = quant_rows<S, DecodeQ6_K>;
  t.float_rows[kKernelF32] = float_rows<S, LoadF32>;
  t.float_rows[kKernelF16] = float_rows<S, LoadF16>;
  t.float_rows[kKernelBF16] = float_rows<S, LoadBF16>;
  t.scratch_bytes = tile_scratch_bytes<S>;
  return t;
}

}  // namespace
}  // namespace frugal::kernels
