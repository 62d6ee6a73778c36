// Scalar/AVX2 implementations of the per-row transformer operations (see ops.h).
#include "kernels/ops.h"

#include "kernels/vector_math.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace frugal {
namespace {

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// head_dim is a multiple of 8 (checked when the model config is read).
template <typename T>
inline float dot8(const float* a, const T* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
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

}  // namespace

void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
          const float* inv_freq, RopeStyle style) {
  const int64_t half = rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float theta = static_cast<float>(position) * inv_freq[i];
    const float c = std::cos(theta), s = std::sin(theta);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x + h * head_dim;
      const int64_t a = style == RopeStyle::kNormal ? 2 * i : i;
      const int64_t b = style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
      const float x0 = head[a], x1 = head[b];
      head[a] = x0 * c - x1 * s;
      head[b] = x0 * s + x1 * c;
    }
  }
}

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

void geglu(float* gate, const float* up, int64_t n) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (Hendrycks & Gimpel 2016)
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    gate[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))) * up[i];
  }
}

void softmax(float* x, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void attend_one_head(const float* q, const float* k, const float* v, int64_t kv_stride,
                     int64_t first, int64_t last, int64_t head_dim, float scale, float* out) {
  attend(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

void attend_one_head(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride,
                     int64_t first, int64_t last, int64_t head_dim, float scale, float* out) {
  attend(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

}  // namespace frugal
