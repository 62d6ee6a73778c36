// Integer matmul kernels for frugal's generic group types ("fq<bits>[s]_g<group>",
// tensor/generic_group.h), written once over the SIMD policy `S` of matmul_simd.h and included by
// each per-ISA kernel file (matmul_avx2.cpp, matmul_avx512.cpp, matmul_avx512vnni.cpp), which
// registers them with add_fq_kernels<S>(table). Internal linkage, like matmul_simd.h.
//
// The scheme is matmul_simd.h's: a block (one group of `group` elements) becomes unsigned byte
// codes per 32-element sub-block plus a weight scale dw and an offset term mw, and
//   y[t][r] = sum over sub-blocks b of dw[r][b] * dx[t][b] * sum_i c[r][i] * q[t][i] + mw[r][b] * sx[t][b]
// with Q8 activations in 32-element blocks (dx their scale, sx = dx * sum(q)). For fq the code c
// is the stored code u in [0, 2^bits): value = scale * u + offset (asymmetric), or
// scale * (u - 2^(bits-1)) (symmetric), so dw = scale for every 32-sub-block of the group and
// mw = offset or -2^(bits-1) * scale (exact: a power of two times an fp16). Eight-bit codes on the
// maddubs path (no VNNI) would overflow its int16 pair sums (255 * 127 * 2), so there they are
// made signed (u - 128, the sign trick of Q8_0) and mw absorbs + 128 * scale.
//
// Unpacking the little-endian bit stream (element i at stream bits [i * bits, (i + 1) * bits)):
// 4 bits are nibbles (low first), 8 bits bytes; the other widths take the 8 elements of each
// `bits`-byte run as one 64-bit word (four words per 32 elements, one vector), move the 16 bits
// around each element into a 16-bit lane with one byte shuffle, and shift each lane right by the
// element's bit offset with one multiply (w * 2^(8 - s) >> 8 keeps bits [s, s + 8) of w).
//
// The tile, the token loop and the float chain of FMAs are matmul_simd.h's (build_tile's layout,
// tile_times_tokens, dot_steps_one_token), so a batched row is bit-identical to the one-token path
// (batch invariance): decode only skips the tile buffer, summing the same integers in the same order.
#pragma once

#include <immintrin.h>

#include <array>
#include <cstring>

#include "kernels/matmul_simd.h"
#include "tensor/generic_group.h"

namespace frugal::kernels {
namespace {

// The dot-product shape of fq codes for tile_times_tokens: 32-element sub-blocks with the exact
// d*sum activation term. kMax bounds the maddubs int16 depth (VNNI needs no bound).
template <int kMax, bool kSgn>
struct FqDot {
  static constexpr int kBlockElems = 32, kSub = 32, kMaxCode = kMax;
  static constexpr bool kSigned = kSgn;
  static constexpr ActivationArray kS = ActivationArray::kS32;
};

// Widths with the same maddubs depth share one instantiation (2..4 bits all allow depth 8).
template <class S, int kBits>
using FqDotFor = FqDot<S::kVnni ? 255 : kBits == 8 ? 127 : kBits <= 4 ? 15 : (1 << kBits) - 1, kBits == 8 && !S::kVnni>;

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Shuffle indices and shift multipliers of the word-based unpack (see the file comment). Word k of
// the four sits in 64-bit lane k; element j of a word needs bytes j*bits/8 and the next one.
template <int kBits>
struct FqUnpackTables {
  static constexpr std::array<int8_t, 32> shuffle(int word_in_lane) {
    std::array<int8_t, 32> idx{};
    for (int half = 0; half < 2; ++half) {
      for (int j = 0; j < 8; ++j) {
        const int first = j * kBits / 8;
        idx[static_cast<size_t>(16 * half + 2 * j)] = static_cast<int8_t>(8 * word_in_lane + first);
        // The next byte only when the element crosses into it (then it is inside the word).
        idx[static_cast<size_t>(16 * half + 2 * j + 1)] =
            j * kBits % 8 + kBits > 8 ? static_cast<int8_t>(8 * word_in_lane + first + 1) : int8_t{-128};
      }
    }
    return idx;
  }
  static constexpr std::array<int8_t, 32> kEven = shuffle(0), kOdd = shuffle(1);
  static constexpr std::array<int16_t, 16> kMul = [] {
    std::array<int16_t, 16> m{};
    for (int i = 0; i < 16; ++i) m[static_cast<size_t>(i)] = static_cast<int16_t>(1 << (8 - (i % 8) * kBits % 8));
    return m;
  }();
};

// Word k (k < 4) of a 32-element sub-block: its bytes [k * bits, k * bits + 8). In the last
// sub-block of a group an 8-byte load would run past the codes (into the next block, or past the
// end of the tensor), so those words are loaded from the last 8 code bytes and shifted down.
template <int kBits, bool kLast>
inline uint64_t fq_word(const uint8_t* sub, int k) {
  uint64_t word;
  const int remaining = kBits * (4 - k);  // code bytes of the sub-block from word k on
  if (kLast && remaining < 8) {
    std::memcpy(&word, sub + 4 * kBits - 8, 8);
    return word >> (8 * (8 - remaining));
  }
  std::memcpy(&word, sub + k * kBits, 8);
  return word;
}

// The 32 codes of one sub-block (4 * kBits bytes at `sub`) as bytes in element order.
template <int kBits, bool kLast>
inline __m256i fq_unpack32(const uint8_t* sub) {
  if constexpr (kBits == 8) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sub));
  } else if constexpr (kBits == 4) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sub));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    return _mm256_setr_m128i(_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi));
  } else {
    using T = FqUnpackTables<kBits>;
    const __m256i words = _mm256_setr_epi64x(
        static_cast<long long>(fq_word<kBits, kLast>(sub, 0)), static_cast<long long>(fq_word<kBits, kLast>(sub, 1)),
        static_cast<long long>(fq_word<kBits, kLast>(sub, 2)), static_cast<long long>(fq_word<kBits, kLast>(sub, 3)));
    const __m256i mul = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(T::kMul.data()));
    // Words 0 and 2 (lane 0 and 1 of `even`), words 1 and 3 (`odd`): packing them lane by lane
    // gives elements 0-7, 8-15 | 16-23, 24-31, the natural order.
    __m256i even = _mm256_shuffle_epi8(words, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(T::kEven.data())));
    __m256i odd = _mm256_shuffle_epi8(words, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(T::kOdd.data())));
    even = _mm256_srli_epi16(_mm256_mullo_epi16(even, mul), 8);
    odd = _mm256_srli_epi16(_mm256_mullo_epi16(odd, mul), 8);
    return _mm256_and_si256(_mm256_packus_epi16(even, odd), _mm256_set1_epi8(static_cast<char>((1 << kBits) - 1)));
  }
}

// One block (group) of a row: codes of its `subs` sub-blocks at codes[32 * s], and dw/mw of
// sub-block s at dw[s * stride], mw[s * stride].
template <int kBits, bool kSignedCodes>
inline void fq_decode_block(const uint8_t* block, int subs, bool symmetric, uint8_t* codes, float* dw, float* mw,
                            int stride) {
  const float scale = half_bits_to_float(load_u16(block));
  float m = symmetric ? -static_cast<float>(1 << (kBits - 1)) * scale : half_bits_to_float(load_u16(block + 2));
  if constexpr (kSignedCodes) m += 128.0f * scale;  // codes u - 128 (symmetric: m becomes exactly 0)
  const uint8_t* q = block + (symmetric ? 2 : 4);
  auto put = [&](int s, __m256i c) {
    if constexpr (kSignedCodes) c = _mm256_xor_si256(c, _mm256_set1_epi8(-128));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * s), c);
    dw[s * stride] = scale;
    mw[s * stride] = m;
  };
  for (int s = 0; s + 1 < subs; ++s) put(s, fq_unpack32<kBits, false>(q + 4 * kBits * s));
  put(subs - 1, fq_unpack32<kBits, true>(q + 4 * kBits * (subs - 1)));
}

// A tile of S::kLanes rows in build_tile's layout: codes [sub-block][8 steps][kLanes][4 bytes],
// dw/mw [sub-block][kLanes]; rows past nr are zero.
template <class S, int kBits>
void fq_build_tile(const WeightMatrix& w, const GenericGroupFormat& f, int64_t r0, int nr, const TileBuffers& tb) {
  using D = FqDotFor<S, kBits>;
  constexpr int L = S::kLanes;
  const int group = static_cast<int>(f.group), subs = group / 32;
  const int64_t n_blocks = w.cols / group;
  const size_t block_bytes = w.traits->block_bytes;
  for (int lane = nr; lane < L; ++lane) std::memset(tb.temp + lane * group, 0, group);
  const uint8_t* rows[L];
  for (int lane = 0; lane < nr; ++lane) rows[lane] = w.row(r0 + lane);
  NextTilePrefetch prefetch(w, r0, L, n_blocks);
  for (int64_t b = 0; b < n_blocks; ++b) {
    prefetch.step();
    float* dw = tb.dw + b * subs * L;
    float* mw = tb.mw + b * subs * L;
    for (int lane = 0; lane < nr; ++lane) {
      fq_decode_block<kBits, D::kSigned>(rows[lane] + b * block_bytes, subs, f.symmetric, tb.temp + lane * group,
                                         dw + lane, mw + lane, L);
    }
    for (int lane = nr; lane < L; ++lane) {
      for (int s = 0; s < subs; ++s) dw[s * L + lane] = mw[s * L + lane] = 0.0f;
    }
    for (int s = 0; s < subs; ++s) S::transpose_codes(tb.temp + 32 * s, group, tb.codes + (b * subs + s) * 8 * L * 4);
  }
}

// One token times a full tile: each block of the L rows is decoded into the small row-major
// buffer and moved into step registers (the tile buffer is skipped); the sums are those of
// tile_times_tokens<S, D, 1, 1>, in the same order.
template <class S, int kBits>
void fq_decode_tile(const WeightMatrix& w, const GenericGroupFormat& f, int64_t r0, const int8_t* xc, const float* xd,
                    const float* xs, float* y, uint8_t* temp) {
  using D = FqDotFor<S, kBits>;
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int L = S::kLanes;
  const int group = static_cast<int>(f.group), subs = group / 32;
  const int64_t n_blocks = w.cols / group;
  const size_t block_bytes = w.traits->block_bytes;
  alignas(64) float dw[8 * L], mw[8 * L];
  const uint8_t* rows[L];
  for (int lane = 0; lane < L; ++lane) rows[lane] = w.row(r0 + lane);
  NextTilePrefetch prefetch(w, r0, L, n_blocks);
  VF acc = S::zerof();
  for (int64_t b = 0; b < n_blocks; ++b) {
    prefetch.step();
    for (int lane = 0; lane < L; ++lane) {
      fq_decode_block<kBits, D::kSigned>(rows[lane] + b * block_bytes, subs, f.symmetric, temp + lane * group, dw + lane,
                                         mw + lane, L);
    }
    for (int s = 0; s < subs; ++s) {
      const int64_t sub = b * subs + s;
      VI steps[8];
      S::rows_to_steps(temp + 32 * s, group, steps);
      const VI isum = dot_steps_one_token<S, D, 1>(steps, xc + sub * 32);
      acc = S::fmadd(S::cvt(isum), S::mul_bcast(S::loadf(dw + s * L), xd + sub), acc);
      acc = S::fmadd_bcast(S::loadf(mw + s * L), xs + sub, acc);
    }
  }
  S::storef(y, acc, L);
}

// quant_rows of matmul_simd.h for one fq bit width (group and symmetry are read from the type).
template <class S, int kBits>
void fq_quant_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                   int64_t y_stride, uint8_t* scratch) {
  using D = FqDotFor<S, kBits>;
  constexpr int L = S::kLanes;
  const GenericGroupFormat f = *generic_group_format(w.traits->type);
  const TileBuffers tb = tile_buffers<S>(scratch, w.cols);
  const int64_t n_groups = a.n_groups();
  const int64_t chunk = w.cols <= kColumnChunk * 3 / 2 || a.n_tokens == 1 ? w.cols : kColumnChunk;
  for (int64_t rt = r0; rt < r1; rt += L) {
    const int nr = static_cast<int>(std::min<int64_t>(L, r1 - rt));
    if (a.n_tokens == 1 && nr == L) {
      fq_decode_tile<S, kBits>(w, f, rt, a.codes(0), a.array(0, ActivationArray::kD32), a.array(0, D::kS), y + rt,
                               tb.temp);
      continue;
    }
    fq_build_tile<S, kBits>(w, f, rt, nr, tb);
    for (int64_t c0 = 0; c0 < w.cols; c0 += chunk) {
      const int64_t cols = std::min(chunk, w.cols - c0);
      const int64_t sub0 = c0 / 32;
      const TilePass pass{tb.codes + c0 * L, tb.dw + sub0 * L, tb.mw + sub0 * L, cols / 32};
      for (int64_t g = 0; g < n_groups; ++g) {
        const int in_group = static_cast<int>(std::min<int64_t>(a.lanes, a.n_tokens - g * a.lanes));
        const int8_t* codes = a.codes(g) + c0 * a.lanes;
        const float* xd = a.array(g, ActivationArray::kD32) + sub0 * a.lanes;
        const float* xs = a.array(g, D::kS) + sub0 * a.lanes;
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

// Fills the fq slots (one per bit width) of a per-ISA table.
template <class S>
void add_fq_kernels(KernelTable& t) {
  t.quant_rows[kKernelFq2] = fq_quant_rows<S, 2>;
  t.quant_rows[kKernelFq3] = fq_quant_rows<S, 3>;
  t.quant_rows[kKernelFq4] = fq_quant_rows<S, 4>;
  t.quant_rows[kKernelFq5] = fq_quant_rows<S, 5>;
  t.quant_rows[kKernelFq6] = fq_quant_rows<S, 6>;
  t.quant_rows[kKernelFq7] = fq_quant_rows<S, 7>;
  t.quant_rows[kKernelFq8] = fq_quant_rows<S, 8>;
}

}  // namespace
}  // namespace frugal::kernels
