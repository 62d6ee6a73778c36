// The matmul kernels for AVX2 + FMA + F16C: 8-row tiles, u8 x s8 products with vpmaddubsw and
// vpmaddwd (the AVX2 form of vpdpbusd), 4 tokens per register tile.
#include <immintrin.h>

#include <cstring>

#include "kernels/matmul_fq.h"
#include "kernels/matmul_simd.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_q4_kernels.h"

namespace frugal::kernels {
namespace {

struct SimdAvx2 {
  static constexpr int kLanes = 8;
  static constexpr int kMaxTokens = 4;  // 16 ymm registers: 4 int16 + 4 int32 + 4 float accumulators
  static constexpr int kFloatRows = 4, kFloatTokens = 2;
  static constexpr int kFloatSmallBatchRows = 0;  // 16 ymm: no room for 8 tokens in one pass
  static constexpr bool kVnni = false;
  using VI = __m256i;
  using VF = __m256;

  static VI zero() { return _mm256_setzero_si256(); }
  static VF zerof() { return _mm256_setzero_ps(); }
  static VI load(const uint8_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static VI bcast32(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }
  static VI maddubs(VI u, VI s) { return _mm256_maddubs_epi16(u, s); }
  static VI add16(VI a, VI b) { return _mm256_add_epi16(a, b); }
  static VI add32(VI a, VI b) { return _mm256_add_epi32(a, b); }
  static VI madd_ones(VI v) { return _mm256_madd_epi16(v, _mm256_set1_epi16(1)); }
  static VI abs8(VI v) { return _mm256_abs_epi8(v); }
  static VI sign8(VI x, VI w) { return _mm256_sign_epi8(x, w); }
  static VF cvt(VI v) { return _mm256_cvtepi32_ps(v); }
  // acc + lo16(a) * lo16(b) + hi16(a) * hi16(b) per int32 lane (the folded K-quant sums).
  static VI dpwssd(VI acc, VI a, VI b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static VI dpwssd_bcast(VI acc, VI a, const int8_t* p) { return dpwssd(acc, a, bcast32(p)); }
  static VI pair16(VI lo, VI hi) { return _mm256_blend_epi16(lo, _mm256_slli_epi32(hi, 16), 0xaa); }
  static VI low16(VI v) { return _mm256_and_si256(v, _mm256_set1_epi32(0xffff)); }
  static VF loadf(const float* p) { return _mm256_loadu_ps(p); }
  static VF mul_bcast(VF a, const float* p) { return _mm256_mul_ps(a, _mm256_broadcast_ss(p)); }
  static VF fmadd(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
  static VF fmadd_bcast(VF a, const float* p, VF c) { return _mm256_fmadd_ps(a, _mm256_broadcast_ss(p), c); }
  static void storef(float* y, VF v, int n) {
    if (n == kLanes) {
      _mm256_storeu_ps(y, v);
    } else {
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      _mm256_maskstore_ps(y, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane), v);
    }
  }
  // The first n lanes of y, zero elsewhere (a partial tile's running sums).
  static VF loadf_partial(const float* y, int n) {
    if (n == kLanes) return _mm256_loadu_ps(y);
    return _mm256_maskload_ps(y, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  static VF load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static VF load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float hsum(VF v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void store(uint8_t* p, VI v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
  // 8 rows of 32 codes (`stride` bytes apart) -> 8 steps of [row][4 bytes]: an 8x8 transpose of
  // 32-bit words.
  static void transpose_codes(const uint8_t* rows, int64_t stride, uint8_t* out) {
    VI steps[8];
    rows_to_steps(rows, stride, steps);
    for (int j = 0; j < 8; ++j) store(out + j * 32, steps[j]);
  }
  static void rows_to_steps(const uint8_t* rows, int64_t stride, VI o[8]) {
    __m256i r[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + i * stride));
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    o[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    o[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    o[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    o[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    o[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    o[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    o[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    o[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
  }
};

// Row offsets of an 8-row tile as gather indices.
inline __m256i row_offsets(size_t row_bytes) {
  return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int32_t>(row_bytes)));
}

// The fp16 in the low (kHigh false) or high half of each gathered 32-bit word, as floats.
template <bool kHigh>
inline __m256 halves_to_float(__m256i words) {
  words = kHigh ? _mm256_srli_epi32(words, 16) : _mm256_and_si256(words, _mm256_set1_epi32(0xffff));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(words, words), 0x08);
  return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}

// Q4_0 / Q4_1 blocks of a full 8-row tile, in registers: rows i and i+4 share a register, a 4x4
// transpose of 32-bit words per 128-bit lane gives word j of all 8 rows, and the low (high)
// nibbles of word j are step j (j + 4). The block header comes with one gather.
template <int kQsOffset, bool kHasMin>
class NibbleTileAvx2 {
 public:
  static constexpr bool kAvailable = true;
  NibbleTileAvx2(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), block_bytes_(w.traits->block_bytes), offsets_(row_offsets(w.row_bytes)) {}
  void load(int64_t b, __m256i steps[8], __m256& dw, __m256& mw) const {
    const uint8_t* p = base_ + b * block_bytes_ + kQsOffset;
    __m256i r[4];
    for (int i = 0; i < 4; ++i) {
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i * row_bytes_));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (i + 4) * row_bytes_));
      r[i] = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    }
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i z[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3),
                          _mm256_unpackhi_epi64(t1, t3)};
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int j = 0; j < 4; ++j) {
      steps[j] = _mm256_and_si256(z[j], m4);
      steps[j + 4] = _mm256_and_si256(_mm256_srli_epi16(z[j], 4), m4);
    }
    const __m256i header = _mm256_i32gather_epi32(reinterpret_cast<const int*>(p - kQsOffset), offsets_, 1);
    dw = halves_to_float<false>(header);
    mw = kHasMin ? halves_to_float<true>(header) : _mm256_mul_ps(dw, _mm256_set1_ps(-8.0f));
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_, block_bytes_;
  __m256i offsets_;
};

// Q8_0 blocks of a full 8-row tile: the 32 code bytes of each row transposed in registers (signed
// codes, multiplied with the sign trick).
class Q8TileAvx2 {
 public:
  static constexpr bool kAvailable = true;
  Q8TileAvx2(const WeightMatrix& w, int64_t r0)
      : base_(w.row(r0)), row_bytes_(w.row_bytes), block_bytes_(w.traits->block_bytes), offsets_(row_offsets(w.row_bytes)) {}
  void load(int64_t b, __m256i steps[8], __m256& dw, __m256& mw) const {
    const uint8_t* p = base_ + b * block_bytes_;
    SimdAvx2::rows_to_steps(p + 2, static_cast<int64_t>(row_bytes_), steps);
    dw = halves_to_float<false>(_mm256_i32gather_epi32(reinterpret_cast<const int*>(p), offsets_, 1));
    mw = _mm256_setzero_ps();
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_, block_bytes_;
  __m256i offsets_;
};

template <>
struct FastTile<SimdAvx2, DecodeQ4_0> : OneSubBlock<NibbleTileAvx2<2, false>, SimdAvx2> {
  using OneSubBlock::OneSubBlock;
};
template <>
struct FastTile<SimdAvx2, DecodeQ4_1> : OneSubBlock<NibbleTileAvx2<4, true>, SimdAvx2> {
  using OneSubBlock::OneSubBlock;
};
template <>
struct FastTile<SimdAvx2, DecodeQ8_0Signed> : OneSubBlock<Q8TileAvx2, SimdAvx2> {
  using OneSubBlock::OneSubBlock;
};

}  // namespace

const KernelTable& avx2_kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = make_kernel_table<SimdAvx2>(Isa::kAvx2);
    t.quant_rows[kKernelSparseQ8] = sparse_q8_rows_avx2;
    add_fq_kernels<SimdAvx2>(t);
    t.quant_rows[kKernelSparseQ4] = sparse_q4_rows_avx2;
    t.quant_rows[kKernelNmSparse] = nm_rows_avx2;
    return t;
  }();
  return table;
}

}  // namespace frugal::kernels
