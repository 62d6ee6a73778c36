// matmul: decode (one token) uses the type's dot product row by row; prefill dequantizes a tile
// of rows once and multiplies it with every token using an AVX2/FMA 4-row x 2-token micro-kernel.
#include "kernels/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "base/check.h"

namespace frugal {
namespace {

constexpr int64_t kRowTile = 16;

inline float horizontal_sum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

// Four dequantized rows (stride `cols`) times two tokens; cols is a multiple of 8.
inline void tile_4x2(const float* w, int64_t cols, const float* x0, const float* x1, float out[4][2]) {
  __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps();
  __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
  __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps();
  __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
  for (int64_t k = 0; k < cols; k += 8) {
    __m256 v0 = _mm256_loadu_ps(x0 + k);
    __m256 v1 = _mm256_loadu_ps(x1 + k);
    __m256 w0 = _mm256_loadu_ps(w + k);
    __m256 w1 = _mm256_loadu_ps(w + cols + k);
    __m256 w2 = _mm256_loadu_ps(w + 2 * cols + k);
    __m256 w3 = _mm256_loadu_ps(w + 3 * cols + k);
    a00 = _mm256_fmadd_ps(w0, v0, a00); a01 = _mm256_fmadd_ps(w0, v1, a01);
    a10 = _mm256_fmadd_ps(w1, v0, a10); a11 = _mm256_fmadd_ps(w1, v1, a11);
    a20 = _mm256_fmadd_ps(w2, v0, a20); a21 = _mm256_fmadd_ps(w2, v1, a21);
    a30 = _mm256_fmadd_ps(w3, v0, a30); a31 = _mm256_fmadd_ps(w3, v1, a31);
  }
  out[0][0] = horizontal_sum(a00); out[0][1] = horizontal_sum(a01);
  out[1][0] = horizontal_sum(a10); out[1][1] = horizontal_sum(a11);
  out[2][0] = horizontal_sum(a20); out[2][1] = horizontal_sum(a21);
  out[3][0] = horizontal_sum(a30); out[3][1] = horizontal_sum(a31);
}

inline float dot_f32_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), acc1);
  }
  float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

}  // namespace

int64_t matmul_workspace_floats(int64_t cols, int n_threads) { return kRowTile * cols * n_threads; }

void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
            int64_t y_stride, float* workspace, ThreadPool& pool) {
  FRUGAL_CHECK(w.traits != nullptr && w.cols % 8 == 0);
  if (n_tokens == 1) {
    pool.parallel_for(w.rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) y[r] = w.traits->dot_f32(w.row(r), x, w.cols);
    });
    return;
  }
  const int64_t n_tiles = (w.rows + kRowTile - 1) / kRowTile;
  pool.run([&](int thread, int n_threads) {
    float* rows_f32 = workspace + thread * kRowTile * w.cols;
    for (int64_t tile = thread; tile < n_tiles; tile += n_threads) {
      const int64_t r0 = tile * kRowTile;
      const int64_t nr = std::min(kRowTile, w.rows - r0);
      for (int64_t i = 0; i < nr; ++i) w.traits->dequantize_row(w.row(r0 + i), rows_f32 + i * w.cols, w.cols);
      int64_t i = 0;
      for (; i + 4 <= nr; i += 4) {
        const float* wt = rows_f32 + i * w.cols;
        int64_t t = 0;
        for (; t + 2 <= n_tokens; t += 2) {
          float out[4][2];
          tile_4x2(wt, w.cols, x + t * x_stride, x + (t + 1) * x_stride, out);
          for (int j = 0; j < 4; ++j) {
            y[t * y_stride + r0 + i + j] = out[j][0];
            y[(t + 1) * y_stride + r0 + i + j] = out[j][1];
          }
        }
        for (; t < n_tokens; ++t) {
          for (int j = 0; j < 4; ++j) y[t * y_stride + r0 + i + j] = dot_f32_avx2(wt + j * w.cols, x + t * x_stride, w.cols);
        }
      }
      for (; i < nr; ++i) {
        for (int64_t t = 0; t < n_tokens; ++t) {
          y[t * y_stride + r0 + i] = dot_f32_avx2(rows_f32 + i * w.cols, x + t * x_stride, w.cols);
        }
      }
    }
  });
}

void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens,
                      float* y, int64_t y_stride) {
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    w.traits->dequantize_row(w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<double>(row[k]) * x[t * x_stride + k];
      y[t * y_stride + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace frugal
