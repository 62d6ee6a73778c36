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

// ---------------------------------------------------------------------------------------------
// One-token path of the widths whose codes never straddle a byte (2, 4, 8 bits), as the FastTile
// loaders of matmul_simd_avx512.h do for Q4_0: word i of a sub-block's codes is gathered from all
// rows of the tile at once (one vpgatherdd: word i of every row, the transposed layout the dot
// products want), and the codes are unpacked in that layout with shifts and masks. A word's
// bytes then hold elements in a fixed permuted order (for 4 bits: the low nibbles of bytes 4i..4i+3
// are elements 8i, 8i+2, 8i+4, 8i+6), so the token's activation codes are permuted the same way
// once per call; the integer sums, and hence every float operation after them, are unchanged.

// Step s, byte m of the gathered layout holds element fq_gathered_element<kBits>(4 * s + m).
template <int kBits>
constexpr int fq_gathered_element(int pos) {
  constexpr int kFields = 8 / kBits;  // codes per byte
  const int step = pos / 4, m = pos % 4, word = step / kFields, field = step % kFields;
  return (4 * word + m) * kFields + field;
}

template <int kBits>
struct FqPermutation {
  // Byte shuffle per 32-element sub-block; every element stays in its 16-byte half (pshufb is in-lane).
  static constexpr std::array<int8_t, 32> kShuffle = [] {
    std::array<int8_t, 32> idx{};
    for (int pos = 0; pos < 32; ++pos) idx[static_cast<size_t>(pos)] = static_cast<int8_t>(fq_gathered_element<kBits>(pos) % 16);
    return idx;
  }();
  static constexpr bool in_lane() {
    for (int pos = 0; pos < 32; ++pos) {
      if (fq_gathered_element<kBits>(pos) / 16 != pos / 16) return false;
    }
    return true;
  }
  static_assert(in_lane());
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
  static VI mask(VI v, int m) { return _mm256_and_si256(v, _mm256_set1_epi8(static_cast<char>(m))); }
  template <int kShift>
  static VI srl(VI v) { return _mm256_srli_epi16(v, kShift); }
  static VI flip(VI v) { return _mm256_xor_si256(v, _mm256_set1_epi8(-128)); }
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
  static VI mask(VI v, int m) { return _mm512_and_si512(v, _mm512_set1_epi8(static_cast<char>(m))); }
  template <int kShift>
  static VI srl(VI v) { return _mm512_srli_epi16(v, kShift); }
  static VI flip(VI v) { return _mm512_xor_si512(v, _mm512_set1_epi8(-128)); }
};
#endif

// The token's codes permuted into the gathered order, sub-block by sub-block.
template <int kBits>
void fq_permute_codes(const int8_t* x, int64_t cols, int8_t* out) {
  const __m256i shuffle = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(FqPermutation<kBits>::kShuffle.data()));
  for (int64_t k = 0; k < cols; k += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), _mm256_shuffle_epi8(v, shuffle));
  }
}

// One token times a full tile, 2/4/8-bit codes gathered (see above); `xp` are the permuted codes.
template <class S, int kBits>
void fq_decode_tile_gathered(const WeightMatrix& w, const GenericGroupFormat& f, int64_t r0, const int8_t* xp,
                             const float* xd, const float* xs, float* y) {
  using D = FqDotFor<S, kBits>;
  using W = FqWide<S::kLanes>;
  using VI = typename S::VI;
  using VF = typename S::VF;
  constexpr int kFields = 8 / kBits;
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
      VI steps[8];
#pragma GCC unroll 8
      for (int i = 0; i < kBits; ++i) {
        const VI word = W::gather(offsets, q + 4 * kBits * s + 4 * i);
        if constexpr (kBits == 8) {
          steps[i] = D::kSigned ? W::flip(word) : word;
        } else if constexpr (kBits == 4) {
          steps[2 * i] = W::mask(word, 0x0f);
          steps[2 * i + 1] = W::mask(W::template srl<4>(word), 0x0f);
        } else {
          static_assert(kBits == 2);
          steps[4 * i] = W::mask(word, 0x03);
          steps[4 * i + 1] = W::mask(W::template srl<2>(word), 0x03);
          steps[4 * i + 2] = W::mask(W::template srl<4>(word), 0x03);
          steps[4 * i + 3] = W::mask(W::template srl<6>(word), 0x03);
        }
      }
      static_assert(kBits * kFields == 8);
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
  // Gathered one-token path: 2/4/8 bits (codes within bytes), row offsets within int32.
  constexpr bool kGathered = kBits == 2 || kBits == 4 || kBits == 8;
  // Rows too long for 32-bit gather offsets (no model comes near) take the row-by-row path.
  const bool gathered = kGathered && w.row_bytes * L <= static_cast<size_t>(INT32_MAX);
  bool permuted = false;  // the token's codes in tb.codes (unused by this path otherwise)
  for (int64_t rt = r0; rt < r1; rt += L) {
    const int nr = static_cast<int>(std::min<int64_t>(L, r1 - rt));
    if (a.n_tokens == 1 && nr == L) {
      if constexpr (kGathered) {
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
