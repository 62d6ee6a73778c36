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
// Two ways to unpack the little-endian bit stream (element i at stream bits [i * bits, (i + 1) * bits)):
// - Row by row, codes in element order (the prefill tile; one-token decode of 7 bits): 4 bits are
//   nibbles (low first), 8 bits bytes; the other widths take the 8 elements of each `bits`-byte
//   run as one 64-bit word (four words per 32 elements, one vector), move the 16 bits around each
//   element into a 16-bit lane with one byte shuffle, and shift each lane right by the element's
//   bit offset with one multiply (w * 2^(8 - s) >> 8 keeps bits [s, s + 8) of w).
// - Gathered across a tile's rows (one-token decode of every other width; see FqGatherPlan).
//
// The tile, the token loop and the float chain of FMAs are matmul_simd.h's (build_tile's layout,
// tile_times_tokens, dot_steps_one_token), so a batched row is bit-identical to the one-token path
// (batch invariance): decode only skips the tile buffer, summing the same integers in the same
// sub-block order (integer sums do not depend on the order of their terms).
#pragma once

#include <immintrin.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/matmul_simd.h"
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include "kernels/matmul_simd_avx512.h"  // rows16_words4
#endif
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

inline constexpr float kFq128 = 128.0f;

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

// One token times a full tile, row by row (7 bits, whose codes the gathered plan cannot place):
// each block of the L rows is decoded into the small row-major buffer and moved into step
// registers (the tile buffer is skipped); the sums are those of tile_times_tokens<S, D, 1, 1>.
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

// ---------------------------------------------------------------------------------------------
// One-token path, as the FastTile loaders of matmul_simd_avx512.h do for Q4_0: word i (4 bytes)
// of a sub-block's codes is loaded from all rows of the tile at once (row loads and an in-register
// transpose per 16 bytes, a vpgatherdd for the rest: word i of every row, the transposed layout
// the dot products want), and the codes are cut out of the words in that layout with shifts and
// masks that are the same for every row. The order of the codes in
// the steps is free as long as the activation codes follow it, so the token's codes are permuted
// once per call to match; the integer sums, and so every float operation after them, are those
// of the tile path (batch invariance).
//
// The plan, per width: element e (stream bits [o, o + bits), o = bits * e) goes to byte m of a
// step. It is cut from the 32-bit word starting at code byte c = o / 8 - m, shifted right by
// k = o % 8, which leaves it at bits [8m, 8m + bits) of the word; c must lie inside the
// sub-block and the element inside the word. Words at byte offsets that are not a multiple of 4
// are made of two loaded words. Each byte position m takes exactly 8 elements (one per step), an
// assignment found by bipartite matching; codes with the same word, shift and step share one mask.
template <int kBits>
struct FqGatherPlan {
  struct Op {
    int step = 0, c = 0, k = 0;
    uint32_t mask = 0;
    bool first = false;  // the step's first op (assigns instead of or-ing)
  };
  struct Plan {
    std::array<int, 32> m{}, step{}, source{};  // source[4 * step + m] = element
    std::array<bool, 4 * kBits> used_word{};
    std::array<Op, 32> ops{};
    int n_ops = 0;
    bool ok = false;
  };
  static constexpr int word_of(int e, int m) { return kBits * e / 8 - m; }
  static constexpr bool allowed(int e, int m) {
    const int c = word_of(e, m);
    return c >= 0 && c <= 4 * kBits - 4 && kBits * e - 8 * c + kBits <= 32;
  }
  // Kuhn's augmenting path with 8 places per byte position; words at multiples of 4 tried first.
  static constexpr bool place(int e, std::array<int, 32>& at, std::array<int, 4>& count, std::array<bool, 4>& seen) {
    for (int pass = 0; pass < 2; ++pass) {
      for (int m = 0; m < 4; ++m) {
        if (!allowed(e, m) || (word_of(e, m) % 4 == 0) != (pass == 0) || seen[static_cast<size_t>(m)]) continue;
        seen[static_cast<size_t>(m)] = true;
        if (count[static_cast<size_t>(m)] < 8) {
          at[static_cast<size_t>(e)] = m;
          ++count[static_cast<size_t>(m)];
          return true;
        }
        for (int f = 0; f < 32; ++f) {
          if (f != e && at[static_cast<size_t>(f)] == m) {
            --count[static_cast<size_t>(m)];
            if (place(f, at, count, seen)) {
              at[static_cast<size_t>(e)] = m;
              ++count[static_cast<size_t>(m)];
              return true;
            }
            ++count[static_cast<size_t>(m)];
            at[static_cast<size_t>(f)] = m;
          }
        }
      }
    }
    return false;
  }
  static constexpr Plan make() {
    Plan p;
    std::array<int, 32> at{};
    for (auto& v : at) v = -1;
    std::array<int, 4> count{};
    for (int e = 0; e < 32; ++e) {
      std::array<bool, 4> seen{};
      if (!place(e, at, count, seen)) return p;
    }
    std::array<int, 4> next{};
    for (int e = 0; e < 32; ++e) {
      const int m = at[static_cast<size_t>(e)];
      const int step = next[static_cast<size_t>(m)]++;
      p.m[static_cast<size_t>(e)] = m;
      p.step[static_cast<size_t>(e)] = step;
      p.source[static_cast<size_t>(4 * step + m)] = e;
      const int c = word_of(e, m), k = kBits * e % 8;
      p.used_word[static_cast<size_t>(c)] = true;
      const uint32_t mask = ((1u << kBits) - 1) << (8 * m);
      bool merged = false;
      for (int i = 0; i < p.n_ops; ++i) {
        Op& op = p.ops[static_cast<size_t>(i)];
        if (op.step == step && op.c == c && op.k == k) {
          op.mask |= mask;
          merged = true;
        }
      }
      if (!merged) {
        bool first = true;
        for (int i = 0; i < p.n_ops; ++i) first = first && p.ops[static_cast<size_t>(i)].step != step;
        p.ops[static_cast<size_t>(p.n_ops++)] = Op{step, c, k, mask, first};
      }
    }
    p.ok = true;
    return p;
  }
  static constexpr Plan kPlan = make();
  // 7 bits have no such assignment (only 7 elements fit byte 3 of a word): they decode row by row.
  static constexpr bool kAvailable = kBits == 8 || kPlan.ok;
};

// The vector operations of the gathered path per register width (the policies of matmul_simd.h
// have no gathers or shifts).
template <int kLanes>
struct FqWide;

template <>
struct FqWide<8> {
  using VI = __m256i;
  using VF = __m256;
  static VI offsets(size_t row_bytes) {
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int32_t>(row_bytes)));
  }
  static VI gather(VI offsets, const uint8_t* p) { return _mm256_i32gather_epi32(reinterpret_cast<const int*>(p), offsets, 1); }
  // The fp16 in the low (high) half of each 32-bit lane as floats.
  static VF halves(VI words, bool high) {
    if (high) words = _mm256_srli_epi32(words, 16);
    const __m256i packed = _mm256_packus_epi32(_mm256_and_si256(words, _mm256_set1_epi32(0xffff)), _mm256_setzero_si256());
    return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
  }
  static VF mul(VF a, float b) { return _mm256_mul_ps(a, _mm256_set1_ps(b)); }
  static VI and32(VI v, uint32_t m) { return _mm256_and_si256(v, _mm256_set1_epi32(static_cast<int32_t>(m))); }
  static VI or_(VI a, VI b) { return _mm256_or_si256(a, b); }
  template <int kShift>
  static VI srl32(VI v) { return kShift == 0 ? v : _mm256_srli_epi32(v, kShift); }
  template <int kShift>
  static VI sll32(VI v) { return _mm256_slli_epi32(v, kShift); }
  static VI flip(VI v) { return _mm256_xor_si256(v, _mm256_set1_epi8(-128)); }
  // Words 0-3 (16 bytes at p) of the 8 rows, transposed: z[j] = word j of every row.
  static void words4(const uint8_t* p, size_t row_bytes, VI z[4]) {
    __m256i r[4];
    for (int i = 0; i < 4; ++i) {
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i * row_bytes));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (i + 4) * row_bytes));
      r[i] = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    }
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    z[0] = _mm256_unpacklo_epi64(t0, t2);
    z[1] = _mm256_unpackhi_epi64(t0, t2);
    z[2] = _mm256_unpacklo_epi64(t1, t3);
    z[3] = _mm256_unpackhi_epi64(t1, t3);
  }
};

#if defined(__AVX512F__) && defined(__AVX512BW__)
template <>
struct FqWide<16> {
  using VI = __m512i;
  using VF = __m512;
  static VI offsets(size_t row_bytes) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(static_cast<int32_t>(row_bytes)));
  }
  static VI gather(VI offsets, const uint8_t* p) { return _mm512_i32gather_epi32(offsets, p, 1); }
  static VF halves(VI words, bool high) {
    if (high) words = _mm512_srli_epi32(words, 16);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
  }
  static VF mul(VF a, float b) { return _mm512_mul_ps(a, _mm512_set1_ps(b)); }
  static VI and32(VI v, uint32_t m) { return _mm512_and_si512(v, _mm512_set1_epi32(static_cast<int32_t>(m))); }
  static VI or_(VI a, VI b) { return _mm512_or_si512(a, b); }
  template <int kShift>
  static VI srl32(VI v) { return kShift == 0 ? v : _mm512_srli_epi32(v, kShift); }
  template <int kShift>
  static VI sll32(VI v) { return _mm512_slli_epi32(v, kShift); }
  static VI flip(VI v) { return _mm512_xor_si512(v, _mm512_set1_epi8(-128)); }
  static void words4(const uint8_t* p, size_t row_bytes, VI z[4]) { rows16_words4(p, row_bytes, z); }
};
#endif

// Byte shuffles of the activation permutation: position p of a sub-block takes element
// source[p] from the low (sel 0) or high (sel -128) 16 bytes.
template <int kBits>
struct FqPermutation {
  static constexpr auto kPlan = FqGatherPlan<kBits>::kPlan;
  static constexpr std::array<int8_t, 32> kIndex = [] {
    std::array<int8_t, 32> idx{};
    for (int p = 0; p < 32; ++p) idx[static_cast<size_t>(p)] = static_cast<int8_t>(kPlan.source[static_cast<size_t>(p)] % 16);
    return idx;
  }();
  static constexpr std::array<int8_t, 32> kSelect = [] {
    std::array<int8_t, 32> sel{};
    for (int p = 0; p < 32; ++p) sel[static_cast<size_t>(p)] = kPlan.source[static_cast<size_t>(p)] >= 16 ? int8_t{-128} : int8_t{0};
    return sel;
  }();
};

// The token's codes permuted into the gathered order, sub-block by sub-block.
template <int kBits>
void fq_permute_codes(const int8_t* x, int64_t cols, int8_t* out) {
  if constexpr (kBits == 8) {
    std::memcpy(out, x, static_cast<size_t>(cols));
  } else {
    using P = FqPermutation<kBits>;
    const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P::kIndex.data()));
    const __m256i sel = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P::kSelect.data()));
    for (int64_t k = 0; k < cols; k += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i lo = _mm256_permute2x128_si256(v, v, 0x00), hi = _mm256_permute2x128_si256(v, v, 0x11);
      const __m256i r = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo, idx), _mm256_shuffle_epi8(hi, idx), sel);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), r);
    }
  }
}

// The 8 steps of one sub-block of the tile from its gathered words (the plan above).
template <class W, int kBits, size_t... kOps>
inline void fq_cut_steps(const typename W::VI* words, typename W::VI* steps, std::index_sequence<kOps...>) {
  using VI = typename W::VI;
  constexpr auto& plan = FqGatherPlan<kBits>::kPlan;
  VI v[4 * kBits - 3];
  [&]<size_t... kC>(std::index_sequence<kC...>) {
    ((plan.used_word[kC] ? (v[kC] = kC % 4 == 0 ? words[kC / 4]
                                                : W::or_(W::template srl32<8 * (kC % 4)>(words[kC / 4]),
                                                         W::template sll32<32 - 8 * (kC % 4)>(words[kC / 4 + 1])),
                            0)
                         : 0),
     ...);
  }(std::make_index_sequence<4 * kBits - 3>());
  auto apply = [&]<size_t kI>(std::integral_constant<size_t, kI>) {
    constexpr auto op = plan.ops[kI];
    const VI t = W::and32(W::template srl32<op.k>(v[op.c]), op.mask);
    steps[op.step] = op.first ? t : W::or_(steps[op.step], t);
  };
  (apply(std::integral_constant<size_t, kOps>{}), ...);
}

// One token times a full tile with gathered code words (see above); `xp` are the permuted codes.
template <class S, int kBits>
void fq_decode_tile_gathered(const WeightMatrix& w, const GenericGroupFormat& f, int64_t r0, const int8_t* xp,
                             const float* xd, const float* xs, float* y) {
  using D = FqDotFor<S, kBits>;
  using W = FqWide<S::kLanes>;
  using VI = typename S::VI;
  using VF = typename S::VF;
  const int subs = static_cast<int>(f.group / 32);
  const int64_t n_blocks = w.cols / f.group;
  const size_t block_bytes = w.traits->block_bytes;
  const VI offsets = W::offsets(w.row_bytes);
  const float sym_offset = -static_cast<float>(1 << (kBits - 1));
  const uint8_t* base = w.row(r0);
  NextTilePrefetch prefetch(w, r0, S::kLanes, n_blocks);
  VF acc = S::zerof();
  for (int64_t b = 0; b < n_blocks; ++b) {
    prefetch.step();
    const uint8_t* p = base + b * block_bytes;
    const VI header = W::gather(offsets, p);  // scale | offset << 16 (symmetric: scale, then codes)
    const VF dw = W::halves(header, false);
    VF mw = f.symmetric ? W::mul(dw, sym_offset) : W::halves(header, true);
    if constexpr (D::kSigned) mw = S::fmadd_bcast(dw, &kFq128, mw);  // codes u - 128: + 128 * scale (exact)
    const uint8_t* q = p + (f.symmetric ? 2 : 4);
    for (int s = 0; s < subs; ++s) {
      VI words[kBits], steps[8];
      // Whole 16-byte runs of the codes by row loads and an in-register transpose (cheaper than
      // four gathers), the rest (2, 3 bits; the last words of 5, 6, 7) by gathers.
      const uint8_t* sub_codes = q + 4 * kBits * s;
#pragma GCC unroll 2
      for (int i = 0; i + 4 <= kBits; i += 4) W::words4(sub_codes + 4 * i, w.row_bytes, words + i);
#pragma GCC unroll 4
      for (int i = kBits / 4 * 4; i < kBits; ++i) words[i] = W::gather(offsets, sub_codes + 4 * i);
      if constexpr (kBits == 8) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) steps[i] = D::kSigned ? W::flip(words[i]) : words[i];
      } else {
        fq_cut_steps<W, kBits>(words, steps, std::make_index_sequence<FqGatherPlan<kBits>::kPlan.n_ops>());
      }
      const int64_t sub = b * subs + s;
      const VI isum = dot_steps_one_token<S, D, 1>(steps, xp + sub * 32);
      acc = S::fmadd(S::cvt(isum), S::mul_bcast(dw, xd + sub), acc);
      acc = S::fmadd_bcast(mw, xs + sub, acc);
    }
  }
  S::storef(y, acc, S::kLanes);
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
  // The gathered one-token path needs row offsets within int32 (no model comes near the limit);
  // longer rows decode row by row.
  const bool gathered = FqGatherPlan<kBits>::kAvailable && w.row_bytes * L <= static_cast<size_t>(INT32_MAX);
  bool permuted = false;  // the token's codes in tb.codes (unused by this path otherwise)
  for (int64_t rt = r0; rt < r1; rt += L) {
    const int nr = static_cast<int>(std::min<int64_t>(L, r1 - rt));
    if (a.n_tokens == 1 && nr == L) {
      if constexpr (FqGatherPlan<kBits>::kAvailable) {
        if (gathered) {
          if (!permuted) {
            fq_permute_codes<kBits>(a.codes(0), w.cols, reinterpret_cast<int8_t*>(tb.codes));
            permuted = true;
          }
          fq_decode_tile_gathered<S, kBits>(w, f, rt, reinterpret_cast<const int8_t*>(tb.codes),
                                            a.array(0, ActivationArray::kD32), a.array(0, D::kS), y + rt);
          continue;
        }
      }
      fq_decode_tile<S, kBits>(w, f, rt, a.codes(0), a.array(0, ActivationArray::kD32), a.array(0, D::kS), y + rt,
                               tb.temp);
      continue;
    }
    fq_build_tile<S, kBits>(w, f, rt, nr, tb);
    permuted = false;  // the tile overwrote them
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
