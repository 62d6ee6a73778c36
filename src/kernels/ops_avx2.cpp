// The transformer ops for AVX2 + FMA + F16C (ops_kernels.h): attention over a float, fp16 or
// q8_0/q4_0 KV cache with a tiled online softmax (integer Q.K for the block types), SwiGLU/GeGLU and softmax on the vectorized exp of
// vector_math.h, RMSNorm with double accumulators.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/ops_kernels.h"
#include "kernels/vector_math.h"

namespace frugal::kernels {
namespace {

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

inline double horizontal_sum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// head_dim is a multiple of 8 (checked when the model config is read).
template <typename T>
inline float dot8(const float* a, const T* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  return horizontal_sum(acc);
}

// Dot products of q with 8 keys (rows `stride` apart) in one vector: 8 accumulators, then one
// transposing reduction instead of a horizontal sum per key.
template <typename T>
inline __m256 dot_8_keys(const float* q, const T* k, int64_t stride, int64_t n) {
  __m256 a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
    for (int j = 0; j < 8; ++j) a[j] = _mm256_fmadd_ps(qv, load8(k + j * stride + i), a[j]);
  }
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// out = out * c + p * v over n (multiple of 8) elements.
template <typename T>
inline void scale_add8(float* out, float c, float p, const T* v, int64_t n) {
  const __m256 vc = _mm256_set1_ps(c), vp = _mm256_set1_ps(p);
  for (int64_t i = 0; i < n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vp, load8(v + i), _mm256_mul_ps(vc, _mm256_loadu_ps(out + i))));
  }
}

template <typename T>
void attend(const float* q, const T* k, const T* v, int64_t kv_stride, int64_t first, int64_t last,
            int64_t head_dim, float scale, float* out) {
  // Keys are visited in tiles; each tile's scores are exponentiated against the running max,
  // and the accumulator is rescaled only when the max grows.
  constexpr int64_t kTile = 64;
  float scores[kTile];
  float running_max = -std::numeric_limits<float>::infinity();
  float running_sum = 0;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t j0 = first; j0 <= last; j0 += kTile) {
    const int64_t n = std::min(kTile, last - j0 + 1);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      _mm256_storeu_ps(scores + j, _mm256_mul_ps(dot_8_keys(q, k + (j0 + j) * kv_stride, kv_stride, head_dim), _mm256_set1_ps(scale)));
    }
    for (; j < n; ++j) scores[j] = dot8(q, k + (j0 + j) * kv_stride, head_dim) * scale;
    float tile_max = -std::numeric_limits<float>::infinity();
    for (j = 0; j < n; ++j) tile_max = std::max(tile_max, scores[j]);
    float correction = 1.0f;
    if (tile_max > running_max) {
      correction = std::exp(running_max - tile_max);
      running_sum *= correction;
      running_max = tile_max;
    }
    // Probabilities of the whole tile at once; the padding up to a multiple of 8 gives 0.
    const int64_t padded = (n + 7) / 8 * 8;
    for (j = n; j < padded; ++j) scores[j] = -std::numeric_limits<float>::infinity();
    const __m256 vmax = _mm256_set1_ps(running_max);
    __m256 vsum = _mm256_setzero_ps();
    for (j = 0; j < padded; j += 8) {
      const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vmax));
      _mm256_storeu_ps(scores + j, p);
      vsum = _mm256_add_ps(vsum, p);
    }
    alignas(32) float sums[8];
    _mm256_store_ps(sums, vsum);
    for (float x : sums) running_sum += x;
    for (j = 0; j < n; ++j) {
      scale_add8(out, j == 0 ? correction : 1.0f, scores[j], v + (j0 + j) * kv_stride, head_dim);
    }
  }
  const float inv = 1.0f / running_sum;
  for (int64_t d = 0; d < head_dim; ++d) out[d] *= inv;
}

// Loaders of a cache row in its stored type. raw8(row, i) gives elements i..i+7 (i a multiple
// of 8) *without* the block scale and scale(row, i) the scale of the block holding element i, so
// the kernels below apply a q8_0/q4_0 block's fp16 d once per 32 elements (one broadcast and one
// FMA) instead of converting and multiplying it into every 8 dequantized integers.
struct F16Loader {
  static constexpr bool kScaled = false;
  static constexpr bool kIntegerDot = false;
  static __m256 raw8(const uint8_t* row, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  }
  static float scale(const uint8_t*, int64_t) { return 1.0f; }
};

inline float block_scale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  return _cvtsh_ss(d);
}

struct Q8Loader {
  static constexpr bool kScaled = true;
  static constexpr bool kIntegerDot = false;
  static __m256 raw8(const uint8_t* row, int64_t i) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + (i >> 5) * 34 + 2 + (i & 31)));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
  static float scale(const uint8_t* row, int64_t i) { return block_scale(row + (i >> 5) * 34); }
};

struct Q4Loader {
  static constexpr bool kScaled = true;
  static constexpr bool kIntegerDot = false;
  static __m256 raw8(const uint8_t* row, int64_t i) {
    const uint8_t* block = row + (i >> 5) * 18;
    const int64_t j = i & 31;
    __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + (j & 15)));
    if (j >= 16) q = _mm_srli_epi16(q, 4);
    q = _mm_and_si128(q, _mm_set1_epi8(0x0F));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(q), _mm256_set1_epi32(8)));
  }
  static float scale(const uint8_t* row, int64_t i) { return block_scale(row + (i >> 5) * 18); }
};

// q . row over n (a multiple of 8) elements of an f16 row. (Block-type keys take the integer
// path below; the float-query form with d applied once per block, commit 89aa38c, was slower:
// bench/results/kv_cache.md.)
template <typename L>
inline __m256 dot_row_acc(const __m256* qv, const uint8_t* row, int64_t n, __m256 acc) {
  static_assert(!L::kScaled, "q8_0/q4_0 keys use Q8IntKey/Q4IntKey");
  for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(qv[i / 8], L::raw8(row, i), acc);
  return acc;
}

// The query of one head as the key loaders need it: float vectors, and for q8_0/q4_0 keys also
// quantized to 8 bits (quantize_query_q8) with the per-block sums q4_0's offset of 8 needs.
constexpr int64_t kMaxHeadDim = 4096;  // the bound model_config.cpp checks
struct Query {
  __m256 f[kMaxHeadDim / 8];
  alignas(32) int8_t i8[kMaxHeadDim];
  float d[kMaxHeadDim / 32];
  __m256i offset[kMaxHeadDim / 32];  // 8 * (sum of the block's quantized query) in lane 0
};

// Key loaders: q . row accumulated into 8 lanes (summed by the caller).
template <typename L>
struct FloatKey {
  static constexpr bool kIntegerDot = false;
  static __m256 dot_acc(const Query& q, const uint8_t* row, int64_t n, __m256 acc) { return dot_row_acc<L>(q.f, row, n, acc); }
};

// q8_0 keys times the 8-bit query: a block's 32 products in integers (maddubs multiplies unsigned
// by signed bytes, so |k| times q with k's sign; pairs stay below 2 * 127 * 127 < 2^15), then one
// conversion and one FMA with d_q * d_k per block.
struct Q8IntKey {
  static constexpr bool kIntegerDot = true;
  static __m256 dot_acc(const Query& q, const uint8_t* row, int64_t n, __m256 acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n / 32; ++b) {
      const uint8_t* block = row + b * 34;
      const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
      const __m256i qv = _mm256_load_si256(reinterpret_cast<const __m256i*>(q.i8 + 32 * b));
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(k, k), _mm256_sign_epi8(qv, k)), ones);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(q.d[b] * block_scale(block)), acc);
    }
    return acc;
  }
};

// q4_0 keys: the nibbles (0..15) are already unsigned for maddubs; sum (c - 8) q = sum c q - 8 sum q.
struct Q4IntKey {
  static constexpr bool kIntegerDot = true;
  static __m256 dot_acc(const Query& q, const uint8_t* row, int64_t n, __m256 acc) {
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < n / 32; ++b) {
      const uint8_t* block = row + b * 18;
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
      const __m256i k = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), low);
      const __m256i qv = _mm256_load_si256(reinterpret_cast<const __m256i*>(q.i8 + 32 * b));
      const __m256i p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(k, qv), ones), q.offset[b]);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(q.d[b] * block_scale(block)), acc);
    }
    return acc;
  }
};

template <typename KL>
inline void prepare_query(const float* q, int64_t head_dim, Query& out) {
  if constexpr (KL::kIntegerDot) {
    quantize_query_q8(q, head_dim, out.i8, out.d);
    for (int64_t b = 0; b < head_dim / 32; ++b) {
      int32_t sum = 0;
      for (int64_t i = 0; i < 32; ++i) sum += out.i8[32 * b + i];
      out.offset[b] = _mm256_setr_epi32(8 * sum, 0, 0, 0, 0, 0, 0, 0);
    }
  } else {
    for (int64_t i = 0; i < head_dim; i += 8) out.f[i / 8] = _mm256_loadu_ps(q + i);
  }
}

// Row j of a contiguous or a paged cache: the attention below is written once over either, so
// both give the same bits for the same rows.
inline const uint8_t* row_of(const KvRows& rows, int64_t j) { return rows.data + j * rows.row_bytes; }
inline const uint8_t* row_of(const PagedKvRows& rows, int64_t j) { return rows.row(j); }

// Dot products of q (as vectors qv) with 8 rows in one vector: 8 accumulators, then one
// transposing reduction instead of a horizontal sum per key.
template <typename KL>
inline __m256 dot_8_rows(const Query& q, const uint8_t* const* rows, int64_t n) {
  __m256 a[8];
  for (int j = 0; j < 8; ++j) a[j] = KL::dot_acc(q, rows[j], n, _mm256_setzero_ps());
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// out = out * correction + sum_j p[j] v_j over a tile's n value rows. W output elements (one
// q8_0/q4_0 block when W = 32) stay in registers over all the tile's rows, and a block's scale is
// folded into p[j] once (p[j] * d), so out is read and written once per tile, not once per row.
template <typename L, int W>
inline void accumulate_values(float* out, float correction, const float* p, const uint8_t* const* rows, int64_t n,
                              int64_t head_dim) {
  constexpr int kRegs = W / 8;
  const __m256 vc = _mm256_set1_ps(correction);
  for (int64_t c = 0; c < head_dim; c += W) {
    __m256 acc[kRegs];
    for (int r = 0; r < kRegs; ++r) acc[r] = _mm256_mul_ps(vc, _mm256_loadu_ps(out + c + 8 * r));
    for (int64_t j = 0; j < n; ++j) {
      const __m256 s = _mm256_set1_ps(L::kScaled ? p[j] * L::scale(rows[j], c) : p[j]);
      for (int r = 0; r < kRegs; ++r) acc[r] = _mm256_fmadd_ps(s, L::raw8(rows[j], c + 8 * r), acc[r]);
    }
    for (int r = 0; r < kRegs; ++r) _mm256_storeu_ps(out + c + 8 * r, acc[r]);
  }
}

// The tiled online softmax of attend() above over rows of any stored type.
template <typename KL, typename VL, typename Rows>
void attend_rows(const float* q, const Rows& k, const Rows& v, int64_t first, int64_t last, int64_t head_dim,
                 float scale, float* out) {
  constexpr int64_t kTile = 64;
  Query prepared;  // on the stack: the decode loop does not allocate
  prepare_query<KL>(q, head_dim, prepared);
  float scores[kTile];
  const uint8_t* rows[kTile];
  float running_max = -std::numeric_limits<float>::infinity();
  float running_sum = 0;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t j0 = first; j0 <= last; j0 += kTile) {
    const int64_t n = std::min(kTile, last - j0 + 1);
    for (int64_t j = 0; j < n; ++j) rows[j] = row_of(k, j0 + j);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      _mm256_storeu_ps(scores + j, _mm256_mul_ps(dot_8_rows<KL>(prepared, rows + j, head_dim), _mm256_set1_ps(scale)));
    }
    for (; j < n; ++j) scores[j] = horizontal_sum(KL::dot_acc(prepared, rows[j], head_dim, _mm256_setzero_ps())) * scale;
    float tile_max = -std::numeric_limits<float>::infinity();
    for (j = 0; j < n; ++j) tile_max = std::max(tile_max, scores[j]);
    float correction = 1.0f;
    if (tile_max > running_max) {
      correction = std::exp(running_max - tile_max);
      running_sum *= correction;
      running_max = tile_max;
    }
    const int64_t padded = (n + 7) / 8 * 8;
    for (j = n; j < padded; ++j) scores[j] = -std::numeric_limits<float>::infinity();
    const __m256 vmax = _mm256_set1_ps(running_max);
    __m256 vsum = _mm256_setzero_ps();
    for (j = 0; j < padded; j += 8) {
      const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vmax));
      _mm256_storeu_ps(scores + j, p);
      vsum = _mm256_add_ps(vsum, p);
    }
    alignas(32) float sums[8];
    _mm256_store_ps(sums, vsum);
    for (float x : sums) running_sum += x;
    for (j = 0; j < n; ++j) rows[j] = row_of(v, j0 + j);
    if (head_dim % 32 == 0) {
      accumulate_values<VL, 32>(out, correction, scores, rows, n, head_dim);
    } else {
      accumulate_values<VL, 8>(out, correction, scores, rows, n, head_dim);  // f16 only (block types need 32 | head_dim)
    }
  }
  const float inv = 1.0f / running_sum;
  for (int64_t d = 0; d < head_dim; ++d) out[d] *= inv;
}

template <typename KL, typename Rows>
void attend_kv_k(const float* q, const Rows& k, const Rows& v, int64_t first, int64_t last, int64_t head_dim,
                 float scale, float* out) {
  switch (v.type) {
    case KvType::kF16: return attend_rows<KL, F16Loader>(q, k, v, first, last, head_dim, scale, out);
    case KvType::kQ8_0: return attend_rows<KL, Q8Loader>(q, k, v, first, last, head_dim, scale, out);
    case KvType::kQ4_0: return attend_rows<KL, Q4Loader>(q, k, v, first, last, head_dim, scale, out);
  }
}

template <typename Rows>
void attend_any(const float* q, const Rows& k, const Rows& v, int64_t first, int64_t last, int64_t head_dim,
                float scale, float* out) {
  switch (k.type) {
    case KvType::kF16: return attend_kv_k<FloatKey<F16Loader>>(q, k, v, first, last, head_dim, scale, out);
    case KvType::kQ8_0: return attend_kv_k<Q8IntKey>(q, k, v, first, last, head_dim, scale, out);
    case KvType::kQ4_0: return attend_kv_k<Q4IntKey>(q, k, v, first, last, head_dim, scale, out);
  }
}

void attend_kv(const float* q, const KvRows& k, const KvRows& v, int64_t first, int64_t last, int64_t head_dim,
               float scale, float* out) {
  attend_any(q, k, v, first, last, head_dim, scale, out);
}

void attend_paged(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t first, int64_t last,
                  int64_t head_dim, float scale, float* out) {
  attend_any(q, k, v, first, last, head_dim, scale, out);
}

// ---------------------------------------------------------------------------------------------
// Grouped-query attention (Ainslie et al. 2023, "GQA"): the G query heads that share one KV head,
// each computed with exactly attend_rows' operations in attend_rows' order (same tiles, same FMA
// chains per output, same reductions), so every head's output has the bits attend_rows gives it
// alone; only the loads are shared: each fp16 key and value row is read and converted once for
// the G heads instead of G times (the conversions cost as much as the FMAs).

// Scores of 8 rows for G heads (out[h] as dot_8_rows<FloatKey<L>> gives it for head h).
template <typename L, int G>
inline void dot_8_rows_float_group(const Query* q, const uint8_t* const* rows, int64_t n, __m256 out[G]) {
  __m256 a[G][8];
  for (int j = 0; j < 8; ++j) {
    for (int h = 0; h < G; ++h) a[h][j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
      const __m256 kv = L::raw8(rows[j], i);
      for (int h = 0; h < G; ++h) a[h][j] = _mm256_fmadd_ps(q[h].f[i / 8], kv, a[h][j]);
    }
  }
  for (int h = 0; h < G; ++h) {
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[h][0], a[h][1]), _mm256_hadd_ps(a[h][2], a[h][3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[h][4], a[h][5]), _mm256_hadd_ps(a[h][6], a[h][7]));
    out[h] = _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
  }
}

template <typename KL>
struct FloatKeyLoader {
  static constexpr bool kShared = false;
  using Loader = F16Loader;
};
template <typename L>
struct FloatKeyLoader<FloatKey<L>> {
  static constexpr bool kShared = true;
  using Loader = L;
};

// accumulate_values for G heads: each output element's chain (correction * out, then one FMA per
// row in row order) is the one accumulate_values computes whatever its width W, so the width here
// (16, or 8 when head_dim is not a multiple of 16) does not change any bit.
template <typename L, int G, int W>
inline void accumulate_values_group(float* out, int64_t head_stride, const float* correction, const float (*p)[64],
                                    const uint8_t* const* rows, int64_t n, int64_t head_dim) {
  constexpr int kRegs = W / 8;
  for (int64_t c = 0; c < head_dim; c += W) {
    __m256 acc[G][kRegs];
    for (int h = 0; h < G; ++h) {
      const __m256 vc = _mm256_set1_ps(correction[h]);
      for (int r = 0; r < kRegs; ++r) acc[h][r] = _mm256_mul_ps(vc, _mm256_loadu_ps(out + h * head_stride + c + 8 * r));
    }
    for (int64_t j = 0; j < n; ++j) {
      __m256 values[kRegs];
      for (int r = 0; r < kRegs; ++r) values[r] = L::raw8(rows[j], c + 8 * r);
      const float d = L::kScaled ? L::scale(rows[j], c) : 1.0f;
      for (int h = 0; h < G; ++h) {
        const __m256 s = _mm256_set1_ps(L::kScaled ? p[h][j] * d : p[h][j]);
        for (int r = 0; r < kRegs; ++r) acc[h][r] = _mm256_fmadd_ps(s, values[r], acc[h][r]);
      }
    }
    for (int h = 0; h < G; ++h) {
      for (int r = 0; r < kRegs; ++r) _mm256_storeu_ps(out + h * head_stride + c + 8 * r, acc[h][r]);
    }
  }
}

// attend_rows for heads q + h * head_stride, h < G, writing out + h * head_stride.
template <typename KL, typename VL, typename Rows, int G>
void attend_rows_group(const float* q, int64_t head_stride, const Rows& k, const Rows& v, int64_t first, int64_t last,
                       int64_t head_dim, float scale, float* out) {
  constexpr int64_t kTile = 64;
  Query prepared[G];
  for (int h = 0; h < G; ++h) prepare_query<KL>(q + h * head_stride, head_dim, prepared[h]);
  float scores[G][kTile];
  const uint8_t* rows[kTile];
  float running_max[G], running_sum[G], correction[G];
  for (int h = 0; h < G; ++h) {
    running_max[h] = -std::numeric_limits<float>::infinity();
    running_sum[h] = 0;
    std::fill(out + h * head_stride, out + h * head_stride + head_dim, 0.0f);
  }
  for (int64_t j0 = first; j0 <= last; j0 += kTile) {
    const int64_t n = std::min(kTile, last - j0 + 1);
    for (int64_t j = 0; j < n; ++j) rows[j] = row_of(k, j0 + j);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      __m256 dots[G];
      if constexpr (FloatKeyLoader<KL>::kShared) {
        dot_8_rows_float_group<typename FloatKeyLoader<KL>::Loader, G>(prepared, rows + j, head_dim, dots);
      } else {
        for (int h = 0; h < G; ++h) dots[h] = dot_8_rows<KL>(prepared[h], rows + j, head_dim);
      }
      for (int h = 0; h < G; ++h) _mm256_storeu_ps(scores[h] + j, _mm256_mul_ps(dots[h], _mm256_set1_ps(scale)));
    }
    for (; j < n; ++j) {
      for (int h = 0; h < G; ++h) {
        scores[h][j] = horizontal_sum(KL::dot_acc(prepared[h], rows[j], head_dim, _mm256_setzero_ps())) * scale;
      }
    }
    const int64_t padded = (n + 7) / 8 * 8;
    for (int h = 0; h < G; ++h) {
      float tile_max = -std::numeric_limits<float>::infinity();
      for (j = 0; j < n; ++j) tile_max = std::max(tile_max, scores[h][j]);
      correction[h] = 1.0f;
      if (tile_max > running_max[h]) {
        correction[h] = std::exp(running_max[h] - tile_max);
        running_sum[h] *= correction[h];
        running_max[h] = tile_max;
      }
      for (j = n; j < padded; ++j) scores[h][j] = -std::numeric_limits<float>::infinity();
      const __m256 vmax = _mm256_set1_ps(running_max[h]);
      __m256 vsum = _mm256_setzero_ps();
      for (j = 0; j < padded; j += 8) {
        const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores[h] + j), vmax));
        _mm256_storeu_ps(scores[h] + j, p);
        vsum = _mm256_add_ps(vsum, p);
      }
      alignas(32) float sums[8];
      _mm256_store_ps(sums, vsum);
      for (float x : sums) running_sum[h] += x;
    }
    for (j = 0; j < n; ++j) rows[j] = row_of(v, j0 + j);
    if (head_dim % 16 == 0) {
      accumulate_values_group<VL, G, 16>(out, head_stride, correction, scores, rows, n, head_dim);
    } else {
      accumulate_values_group<VL, G, 8>(out, head_stride, correction, scores, rows, n, head_dim);
    }
  }
  for (int h = 0; h < G; ++h) {
    const float inv = 1.0f / running_sum[h];
    for (int64_t d = 0; d < head_dim; ++d) out[h * head_stride + d] *= inv;
  }
}

template <typename KL, typename VL, typename Rows>
void attend_group_v(const float* q, int64_t n_heads, const Rows& k, const Rows& v, int64_t first, int64_t last,
                    int64_t head_dim, float scale, float* out) {
  // Groups of up to 4 heads at a time (4 x 8 score accumulators stay within the register file
  // with the rows' loads); bigger groups go in parts of 4.
  for (int64_t h0 = 0; h0 < n_heads;) {
    const int64_t part = std::min<int64_t>(4, n_heads - h0);
    const float* qh = q + h0 * head_dim;
    float* oh = out + h0 * head_dim;
    switch (part) {
      case 1: attend_rows<KL, VL>(qh, k, v, first, last, head_dim, scale, oh); break;
      case 2: attend_rows_group<KL, VL, Rows, 2>(qh, head_dim, k, v, first, last, head_dim, scale, oh); break;
      case 3: attend_rows_group<KL, VL, Rows, 3>(qh, head_dim, k, v, first, last, head_dim, scale, oh); break;
      default: attend_rows_group<KL, VL, Rows, 4>(qh, head_dim, k, v, first, last, head_dim, scale, oh); break;
    }
    h0 += part;
  }
}

template <typename KL, typename Rows>
void attend_group_k(const float* q, int64_t n_heads, const Rows& k, const Rows& v, int64_t first, int64_t last,
                    int64_t head_dim, float scale, float* out) {
  switch (v.type) {
    case KvType::kF16: return attend_group_v<KL, F16Loader>(q, n_heads, k, v, first, last, head_dim, scale, out);
    case KvType::kQ8_0: return attend_group_v<KL, Q8Loader>(q, n_heads, k, v, first, last, head_dim, scale, out);
    case KvType::kQ4_0: return attend_group_v<KL, Q4Loader>(q, n_heads, k, v, first, last, head_dim, scale, out);
  }
}

template <typename Rows>
void attend_group_any(const float* q, int64_t n_heads, const Rows& k, const Rows& v, int64_t first, int64_t last,
                      int64_t head_dim, float scale, float* out) {
  switch (k.type) {
    case KvType::kF16: return attend_group_k<FloatKey<F16Loader>>(q, n_heads, k, v, first, last, head_dim, scale, out);
    case KvType::kQ8_0: return attend_group_k<Q8IntKey>(q, n_heads, k, v, first, last, head_dim, scale, out);
    case KvType::kQ4_0: return attend_group_k<Q4IntKey>(q, n_heads, k, v, first, last, head_dim, scale, out);
  }
}

void attend_heads_kv(const float* q, int64_t n_heads, const KvRows& k, const KvRows& v, int64_t first, int64_t last,
                     int64_t head_dim, float scale, float* out) {
  attend_group_any(q, n_heads, k, v, first, last, head_dim, scale, out);
}

void attend_heads_paged(const float* q, int64_t n_heads, const PagedKvRows& k, const PagedKvRows& v, int64_t first,
                        int64_t last, int64_t head_dim, float scale, float* out) {
  attend_group_any(q, n_heads, k, v, first, last, head_dim, scale, out);
}

void attend_f32(const float* q, const float* k, const float* v, int64_t kv_stride, int64_t first, int64_t last,
                int64_t head_dim, float scale, float* out) {
  attend(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

void attend_f16(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride, int64_t first, int64_t last,
                int64_t head_dim, float scale, float* out) {
  attend(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

// The sum of squares in double (as the twin), 4 lanes at a time; x and y may be the same array.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* y) {
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), hi = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    acc0 = _mm256_fmadd_pd(lo, lo, acc0);
    acc1 = _mm256_fmadd_pd(hi, hi, acc1);
  }
  double sum = horizontal_sum(_mm256_add_pd(acc0, acc1));
  for (; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  const __m256 vs = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(weight + i)));
  }
  for (; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

// silu(g) = g / (1 + e^-g).
void swiglu(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

// GELU's tanh form through the identity 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), so one exp8
// serves: gelu(x) = x / (1 + e^(-2u)) with u = sqrt(2/pi) (x + 0.044715 x^3) (Hendrycks & Gimpel
// 2016). Very negative x overflow e^(-2u) to +inf and give -0, as 0.5 x (1 + tanh(u)) does.
void geglu(float* gate, const float* up, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  const __m256 minus_two_c = _mm256_set1_ps(-2.0f * kSqrt2OverPi), cubic = _mm256_set1_ps(0.044715f);
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(cubic, x), _mm256_mul_ps(x, x), x);  // x + 0.044715 x^3
    const __m256 e = exp8(_mm256_mul_ps(minus_two_c, inner));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float x = gate[i];
    gate[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))) * up[i];
  }
}

// Max, exp and sum vectorized; the sum of each vector of exponentials is added in double so long
// rows (a vocabulary) keep the twin's accuracy.
void softmax(float* x, int64_t n) {
  __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float max = *std::max_element(lanes, lanes + 8);
  for (; i < n; ++i) max = std::max(max, x[i]);
  const __m256 vm = _mm256_set1_ps(max);
  __m256d acc = _mm256_setzero_pd();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                                           _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
  }
  double sum = horizontal_sum(acc);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
  for (; i < n; ++i) x[i] *= inv;
}

}  // namespace

const OpsTable& avx2_ops_table() {
  static const OpsTable table{Isa::kAvx2, rms_norm,     swiglu,      geglu,           softmax,           attend_f32,
                               attend_f16,  attend_kv,   attend_paged, attend_heads_kv, attend_heads_paged};
  return table;
}

}  // namespace frugal::kernels
