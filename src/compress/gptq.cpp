// GPTQ in its Cholesky form with lazy batch updates, groups fitted on the error-updated weights,
// and the Hessian accumulation and dense factorizations it needs (see gptq.h).
#include "compress/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "base/check.h"
#include "compress/parallel.h"
#include "compress/prune.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace frugal::compress {
namespace {

constexpr int64_t kPanel = 256;  // rows of X per transposed batch in HessianAccumulator

// Four dot products of a0..a3 with b over n elements (n a multiple of 8), b loaded once for all
// four. Products are formed in Acc (float or double) precision. AVX2/FMA is the project's
// baseline ISA; the portable loop keeps other targets building.
template <typename Acc>
void dot4(const float* a0, const float* a1, const float* a2, const float* a3, const float* b,
          int64_t n, double out[4]) {
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (sizeof(Acc) == sizeof(float)) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (int64_t t = 0; t < n; t += 8) {
      const __m256 bv = _mm256_loadu_ps(b + t);
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + t), bv, s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + t), bv, s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + t), bv, s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + t), bv, s3);
    }
    const __m256 sums[4] = {s0, s1, s2, s3};
    for (int r = 0; r < 4; ++r) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, sums[r]);
      double total = 0.0;
      for (float v : lanes) total += v;
      out[r] = total;
    }
  } else {
    __m256d s[8];
    for (auto& v : s) v = _mm256_setzero_pd();
    for (int64_t t = 0; t < n; t += 4) {
      const __m256d bv = _mm256_cvtps_pd(_mm_loadu_ps(b + t));
      s[0] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a0 + t)), bv, s[0]);
      s[1] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a1 + t)), bv, s[1]);
      s[2] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a2 + t)), bv, s[2]);
      s[3] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a3 + t)), bv, s[3]);
    }
    for (int r = 0; r < 4; ++r) {
      alignas(32) double lanes[4];
      _mm256_store_pd(lanes, s[r]);
      out[r] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    }
  }
#else
  const float* a[4] = {a0, a1, a2, a3};
  for (int r = 0; r < 4; ++r) {
    Acc partial[8] = {};
    for (int64_t t = 0; t < n; t += 8) {
      for (int k = 0; k < 8; ++k) partial[k] += static_cast<Acc>(a[r][t + k]) * static_cast<Acc>(b[t + k]);
    }
    double total = 0.0;
    for (Acc v : partial) total += static_cast<double>(v);
    out[r] = total;
  }
#endif
}

double dot_double(const double* a, const double* b, int64_t n) {
  int64_t i = 0;
  double sum = 0.0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i), s0);
    s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i + 4), _mm256_loadu_pd(b + i + 4), s1);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out[4r + q] = a_r . b_q over n elements (r < 2, q < 4): a 2 x 4 register tile, so each loaded
// vector feeds several products and the factorization runs from cache rather than memory.
void dot2x4(const double* a0, const double* a1, const double* b0, const double* b1, const double* b2,
            const double* b3, int64_t n, double out[8]) {
  int64_t t = 0;
  for (int k = 0; k < 8; ++k) out[k] = 0.0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256d s[8];
  for (auto& v : s) v = _mm256_setzero_pd();
  for (; t + 4 <= n; t += 4) {
    const __m256d x0 = _mm256_loadu_pd(a0 + t), x1 = _mm256_loadu_pd(a1 + t);
    const __m256d y0 = _mm256_loadu_pd(b0 + t), y1 = _mm256_loadu_pd(b1 + t);
    const __m256d y2 = _mm256_loadu_pd(b2 + t), y3 = _mm256_loadu_pd(b3 + t);
    s[0] = _mm256_fmadd_pd(x0, y0, s[0]);
    s[1] = _mm256_fmadd_pd(x0, y1, s[1]);
    s[2] = _mm256_fmadd_pd(x0, y2, s[2]);
    s[3] = _mm256_fmadd_pd(x0, y3, s[3]);
    s[4] = _mm256_fmadd_pd(x1, y0, s[4]);
    s[5] = _mm256_fmadd_pd(x1, y1, s[5]);
    s[6] = _mm256_fmadd_pd(x1, y2, s[6]);
    s[7] = _mm256_fmadd_pd(x1, y3, s[7]);
  }
  for (int k = 0; k < 8; ++k) {
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, s[k]);
    out[k] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  }
#endif
  const double* b[4] = {b0, b1, b2, b3};
  for (; t < n; ++t) {
    for (int q = 0; q < 4; ++q) {
      out[q] += a0[t] * b[q][t];
      out[4 + q] += a1[t] * b[q][t];
    }
  }
}

// y[0..n) -= a * x[0..n), each element with one fused multiply-add. GPTQ's updates are
// written this way everywhere (the eager in-batch update, the lazy batch update and the pending
// updates a mid-batch group fit reconstructs), so lazy batching gives bit-identical weights
// whatever the block size and however the compiler contracts expressions.
inline void axpy_sub(float* y, float a, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = std::fma(-a, x[j], y[j]);
}

// Per-row grids of the matrix being quantized: one fitted group (format block or generic group)
// per `group` columns, one AffineGrid per `sub` columns (format sub-block or generic group).
struct GridBook {
  QuantTarget target;
  int64_t rows = 0, cols = 0;
  int64_t group = 0, sub = 0;
  int64_t groups_per_row = 0, subs_per_row = 0, subs_per_group = 0;
  std::vector<BlockGrid> blocks;  // formats: rows * groups_per_row
  std::vector<AffineGrid> grids;  // rows * subs_per_row

  GridBook(const QuantTarget& t, int64_t r, int64_t c) : target(t), rows(r), cols(c) {
    group = t.group_size(c);
    sub = t.sub_size(c);
    groups_per_row = (c + group - 1) / group;
    subs_per_row = (c + sub - 1) / sub;
    subs_per_group = group / sub;
    if (t.is_format) blocks.resize(static_cast<size_t>(rows * groups_per_row));
    grids.resize(static_cast<size_t>(rows * subs_per_row));
  }
  int64_t group_begin(int64_t g) const { return g * group; }
  int64_t group_end(int64_t g) const { return std::min(cols, (g + 1) * group); }
};

}  // namespace

// ---- HessianAccumulator ------------------------------------------------------------------------

HessianAccumulator::HessianAccumulator(int64_t cols, Precision precision)
    : cols_(cols), precision_(precision) {
  FRUGAL_CHECK(cols > 0);
  sum_.assign(static_cast<size_t>(cols * cols), 0.0);
  panel_.assign(static_cast<size_t>(cols * kPanel), 0.0f);
}

void HessianAccumulator::add(const float* x, int64_t n_rows, int64_t stride, ThreadPool* pool) {
  if (stride == 0) stride = cols_;
  const int64_t c = cols_;
  for (int64_t start = 0; start < n_rows; start += kPanel) {
    const int64_t b = std::min(kPanel, n_rows - start);
    const int64_t padded = (b + 7) / 8 * 8;
    // Transpose the batch so every product X^T X (i, j) is a dot of two contiguous columns;
    // the padding rows are zero.
    for_chunks(pool, c, [&](int64_t col0, int64_t col1, int) {
      for (int64_t col = col0; col < col1; ++col) {
        float* p = panel_.data() + col * kPanel;
        for (int64_t t = 0; t < b; ++t) p[t] = x[(start + t) * stride + col];
        for (int64_t t = b; t < padded; ++t) p[t] = 0.0f;
      }
    });
    // Upper triangle, four rows of the product at a time (each column j is loaded once for all
    // four), rows past the end alias the last row and are discarded. Row quads go to the threads
    // one at a time (their lengths shrink along the triangle); each sum element is written by one
    // thread with the same products, so the result does not depend on the thread count.
    for_each_dynamic(pool, (c + 3) / 4, [&](int64_t quad, int) {
      const int64_t i = quad * 4;
      const float* a[4];
      for (int r = 0; r < 4; ++r) a[r] = panel_.data() + std::min(i + r, c - 1) * kPanel;
      for (int64_t j = i; j < c; ++j) {
        double d[4];
        if (precision_ == Precision::kFloat64) {
          dot4<double>(a[0], a[1], a[2], a[3], panel_.data() + j * kPanel, padded, d);
        } else {
          dot4<float>(a[0], a[1], a[2], a[3], panel_.data() + j * kPanel, padded, d);
        }
        for (int r = 0; r < 4 && i + r <= j; ++r) sum_[static_cast<size_t>((i + r) * c + j)] += d[r];
      }
    });
  }
  samples_ += n_rows;
}

std::vector<double> HessianAccumulator::gram() const {
  std::vector<double> g(sum_.size());
  const int64_t c = cols_;
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t j = i; j < c; ++j) {
      g[static_cast<size_t>(i * c + j)] = g[static_cast<size_t>(j * c + i)] = sum_[static_cast<size_t>(i * c + j)];
    }
  }
  return g;
}

std::vector<double> HessianAccumulator::hessian() const {
  std::vector<double> h = gram();
  const double scale = samples_ > 0 ? 2.0 / static_cast<double>(samples_) : 0.0;
  for (double& v : h) v *= scale;
  return h;
}

// ---- Dense factorizations ----------------------------------------------------------------------

bool factor_upper_cholesky(double* a, int64_t n, ThreadPool* pool) {
  // Cholesky started from the last row ("UL"): A = V V^T with V upper triangular. Column j of V
  // needs only the rows' tails k > j, which are finished, so each entry is one contiguous dot:
  //   V_jj = sqrt(A_jj - |V_j,(j+1:)|^2),  V_ij = (A_ij - V_i,(j+1:) . V_j,(j+1:)) / V_jj  (i < j).
  // Then (V^-1)^T V^-1 = A^-1 with V^-1 upper: V^-1 is the upper Cholesky factor of A^-1 that
  // GPTQ reads its updates from, obtained without forming A^-1.
  // Blocked by kBlock columns (right to left): first the whole finished tail k >= j1 is
  // subtracted from the block's columns with 2 x 4 tiles, then the block is factored with its
  // in-block tails only; the dots then stream each row once per block instead of once per column.
  constexpr int64_t kBlock = 64;
  for (int64_t j1 = n, j0; j1 > 0; j1 = j0) {
    j0 = std::max<int64_t>(0, j1 - kBlock);
    const int64_t tail = n - j1;
    if (tail > 0) {
      // Rows i >= j of the block's columns land in the lower triangle, which is never read and
      // is cleared at the end.
      // Row pairs are independent (they write columns [j0, j1) and read only the finished
      // columns >= j1), so they are split over the threads.
      for_chunks(pool, (j1 + 1) / 2, [&](int64_t p0, int64_t p1, int) {
        for (int64_t i = 2 * p0; i < std::min(j1, 2 * p1); i += 2) {
          const double* r0 = a + i * n + j1;
          const double* r1 = a + std::min(i + 1, j1 - 1) * n + j1;
          for (int64_t j = j0; j < j1; j += 4) {
            const double* c[4];
            for (int q = 0; q < 4; ++q) c[q] = a + std::min(j + q, j1 - 1) * n + j1;
            double d[8];
            dot2x4(r0, r1, c[0], c[1], c[2], c[3], tail, d);
            for (int r = 0; r < 2 && i + r < j1; ++r) {
              for (int q = 0; q < 4 && j + q < j1; ++q) a[(i + r) * n + j + q] -= d[4 * r + q];
            }
          }
        }
      });
    }
    for (int64_t j = j1 - 1; j >= j0; --j) {
      const double* vj = a + j * n + j + 1;
      const int64_t len = j1 - j - 1;
      const double pivot = a[j * n + j] - dot_double(vj, vj, len);
      if (!(pivot > 0.0)) return false;
      const double vjj = std::sqrt(pivot);
      a[j * n + j] = vjj;
      const double inv = 1.0 / vjj;
      for (int64_t i = 0; i < j; ++i) {
        a[i * n + j] = (a[i * n + j] - dot_double(a + i * n + j + 1, vj, len)) * inv;
      }
    }
  }
  for (int64_t i = 1; i < n; ++i) std::fill(a + i * n, a + i * n + i, 0.0);
  return true;
}

void invert_upper_triangular(double* v, int64_t n, ThreadPool* pool) {
  // Column j of U = V^-1 by back substitution, U_jj = 1 / V_jj and for i < j
  //   U_ij = -(V_i,(i+1:j+1) . U_(i+1:j+1),j) / V_ii,
  // kept transposed in the free lower triangle (row j holds column j of U, contiguous), so both
  // operands of every dot are contiguous. kGroup columns advance together so each row of V is
  // read from memory once per group, and rows go in pairs (i, i-1) through 2 x 4 tiles: row i-1
  // shares row i's range and adds its one extra term V_(i-1),i U_ij once U_ij is known. The
  // diagonal of V is kept aside because U_jj takes its place.
  constexpr int64_t kGroup = 16;
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) diag[static_cast<size_t>(i)] = v[i * n + i];
  auto ut = [&](int64_t j, int64_t i) -> double& { return v[j * n + i]; };  // U_ij, i <= j
  // Columns of U depend only on V and on themselves, so the groups are independent; they go to
  // the threads one at a time, largest (last) first, as their cost grows with j^2.
  const int64_t n_groups = (n + kGroup - 1) / kGroup;
  for_each_dynamic(pool, n_groups, [&](int64_t item, int) {
    const int64_t j0 = (n_groups - 1 - item) * kGroup;
    const int64_t count = std::min(kGroup, n - j0);
    // Rows inside the group: each column on its own (short dots).
    for (int64_t q = 0; q < count; ++q) {
      const int64_t j = j0 + q;
      ut(j, j) = 1.0 / diag[static_cast<size_t>(j)];
      for (int64_t i = j - 1; i >= j0; --i) {
        ut(j, i) = -dot_double(v + i * n + i + 1, &ut(j, i + 1), j - i) / diag[static_cast<size_t>(i)];
      }
    }
    // Rows above the group, two at a time; the shared range is (i, j0].
    for (int64_t i = j0 - 1; i >= 0; i -= 2) {
      const bool pair = i >= 1;
      const double* v0 = v + i * n + i + 1;
      const double* v1 = pair ? v + (i - 1) * n + i + 1 : v0;
      const int64_t common = j0 - i;
      for (int64_t q0 = 0; q0 < count; q0 += 4) {
        const double* c[4];
        for (int64_t q = 0; q < 4; ++q) c[q] = &ut(j0 + std::min(q0 + q, count - 1), i + 1);
        double d[8];
        dot2x4(v0, v1, c[0], c[1], c[2], c[3], common, d);
        for (int64_t q = 0; q < 4 && q0 + q < count; ++q) {
          const int64_t j = j0 + q0 + q;
          double s0 = d[q], s1 = d[4 + q];
          for (int64_t k = j0 + 1; k <= j; ++k) {
            s0 += v[i * n + k] * ut(j, k);
            if (pair) s1 += v[(i - 1) * n + k] * ut(j, k);
          }
          const double uij = -s0 / diag[static_cast<size_t>(i)];
          ut(j, i) = uij;
          if (pair) ut(j, i - 1) = -(s1 + v[(i - 1) * n + i] * uij) / diag[static_cast<size_t>(i - 1)];
        }
      }
    }
  });
  // Move U from the lower triangle (transposed) to the upper one.
  for_chunks(pool, n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = i + 1; j < n; ++j) v[i * n + j] = v[j * n + i];
    }
  });
  for (int64_t i = 0; i < n; ++i) std::fill(v + i * n, v + i * n + i, 0.0);
}

// ---- GPTQ --------------------------------------------------------------------------------------

Result<GptqHessian> gptq_prepare(const double* hessian, int64_t cols, const GptqOptions& options) {
  if (hessian == nullptr || cols <= 0) return Status::error("gptq: empty Hessian");
  if (!(options.percdamp >= 0.0)) return Status::error("gptq: percdamp must be >= 0");
  const int64_t c = cols;
  GptqHessian p;
  p.cols = c;
  p.dead.assign(static_cast<size_t>(c), 0);
  p.importance.resize(static_cast<size_t>(c));
  std::vector<double> diag(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) {
    double h = hessian[i * c + i];
    if (!std::isfinite(h)) return Status::error("gptq: Hessian has a non-finite diagonal at column " + std::to_string(i));
    // A column whose input is always 0 has no influence on the output: GPTQ zeroes its weights
    // and sets H_ii = 1 so the factorization stays regular.
    if (!(h > 0.0)) {
      p.dead[static_cast<size_t>(i)] = 1;
      ++p.dead_columns;
      h = 1.0;
    }
    diag[static_cast<size_t>(i)] = h;
    p.importance[static_cast<size_t>(i)] = static_cast<float>(h);
  }
  p.order.resize(static_cast<size_t>(c));
  std::iota(p.order.begin(), p.order.end(), 0);
  if (options.act_order) {
    // Columns with large activations first (GPTQ "act-order" / desc_act): their errors can still
    // be compensated by the many columns that follow.
    std::sort(p.order.begin(), p.order.end(), [&](int64_t a, int64_t b) {
      const double da = diag[static_cast<size_t>(a)], db = diag[static_cast<size_t>(b)];
      return da > db || (da == db && a < b);
    });
  }
  double mean_diag = 0.0;
  for (double d : diag) mean_diag += d;
  mean_diag /= static_cast<double>(c);
  double damp = options.percdamp * mean_diag;
  std::vector<double> h(static_cast<size_t>(c * c));
  for (int attempt = 0;; ++attempt) {
    for (int64_t i = 0; i < c; ++i) {
      const int64_t oi = p.order[static_cast<size_t>(i)];
      for (int64_t j = i; j < c; ++j) {
        const int64_t oj = p.order[static_cast<size_t>(j)];
        h[static_cast<size_t>(i * c + j)] = i == j ? diag[static_cast<size_t>(oi)] + damp : hessian[oi * c + oj];
      }
    }
    if (factor_upper_cholesky(h.data(), c, options.pool)) break;
    if (attempt == 4) {
      return Status::error("gptq: Hessian is not positive definite even with dampening " + std::to_string(damp));
    }
    damp = damp > 0.0 ? damp * 10.0 : 1e-6 * mean_diag;
  }
  p.damp = damp;
  invert_upper_triangular(h.data(), c, options.pool);
  p.u.resize(h.size());
  for (size_t i = 0; i < h.size(); ++i) p.u[i] = static_cast<float>(h[i]);
  return p;
}

Result<GptqResult> gptq_quantize(const float* weights, int64_t rows, int64_t cols,
                                 const double* hessian, const QuantTarget& target,
                                 const GptqOptions& options) {
  FRUGAL_RETURN_IF_ERROR(check_target(target, cols));
  FRUGAL_ASSIGN_OR_RETURN(GptqHessian prepared, gptq_prepare(hessian, cols, options));
  return gptq_quantize(weights, rows, cols, prepared, target, options);
}

Result<GptqResult> gptq_quantize(const float* weights, int64_t rows, int64_t cols,
                                 const GptqHessian& prepared, const QuantTarget& target,
                                 const GptqOptions& options) {
  FRUGAL_RETURN_IF_ERROR(check_target(target, cols));
  if (weights == nullptr || rows <= 0) return Status::error("gptq: empty weight matrix");
  if (prepared.cols != cols) {
    return Status::error("gptq: Hessian has " + std::to_string(prepared.cols) + " columns, weights " +
                         std::to_string(cols));
  }
  if (options.block_size <= 0) return Status::error("gptq: block_size must be positive");
  const int64_t c = cols;
  const SparsityPattern pattern{options.sparsity_n, options.sparsity_m};
  const bool prune = options.sparsity > 0.0 || pattern.is_n_m();
  int64_t bs = options.block_size;
  if (prune) {
    if (options.act_order) return Status::error("gptq: joint pruning needs act_order off");
    if (pattern.is_n_m()) {
      if (c % pattern.m != 0) return Status::error("gptq: rows of " + std::to_string(c) + " are not a multiple of M = " + std::to_string(pattern.m));
      bs = std::max<int64_t>(pattern.m, bs / pattern.m * pattern.m);  // blocks hold whole N:M groups
    }
  }
  std::vector<char> mask;  // pruned weights of the current block (rows x block width)
  const std::vector<int64_t>& order = prepared.order;
  std::vector<int64_t> position(static_cast<size_t>(c));  // position[original column] = i
  for (int64_t i = 0; i < c; ++i) position[static_cast<size_t>(order[static_cast<size_t>(i)])] = i;
  const float* u = prepared.u.data();

  // Working weights in quantization order; dead columns start at 0.
  std::vector<float> w(static_cast<size_t>(rows * c));
  for_chunks(options.pool, rows, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < c; ++i) {
        const int64_t oc = order[static_cast<size_t>(i)];
        w[static_cast<size_t>(r * c + i)] = prepared.dead[static_cast<size_t>(oc)] ? 0.0f : weights[r * c + oc];
      }
    }
  });

  const bool search = options.fit == GridFit::kSearch;
  const float* importance = search && options.importance_weighted_fit ? prepared.importance.data() : nullptr;
  const bool refit = search && options.refit_sub_blocks && target.is_format && format_layout(target.type).two_level;
  GridBook book(target, rows, c);
  // Where each group is fitted and each sub-block refitted: the same column position for every
  // row (the first column of the group, or of the sub-block, that the quantizer reaches).
  std::vector<char> fit_at(static_cast<size_t>(c), 0), refit_at(static_cast<size_t>(c), 0);
  {
    std::vector<char> group_fitted(static_cast<size_t>(book.groups_per_row), 0);
    std::vector<char> sub_fitted(static_cast<size_t>(book.subs_per_row), 0);
    for (int64_t i = 0; i < c; ++i) {
      const int64_t oc = order[static_cast<size_t>(i)];
      const int64_t g = oc / book.group, s = oc / book.sub;
      if (!group_fitted[static_cast<size_t>(g)]) {
        fit_at[static_cast<size_t>(i)] = 1;
        group_fitted[static_cast<size_t>(g)] = 1;
        sub_fitted[static_cast<size_t>(s)] = 1;  // fitted on these very values
      }
      if (refit && !sub_fitted[static_cast<size_t>(s)]) {
        refit_at[static_cast<size_t>(i)] = 1;
        sub_fitted[static_cast<size_t>(s)] = 1;
      }
    }
  }
  std::vector<int16_t> codes(static_cast<size_t>(rows * c));
  std::vector<float> err(static_cast<size_t>(rows * bs));
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  GptqResult result;
  result.dead_columns = prepared.dead_columns;
  result.damp = prepared.damp;
  // Per-thread work counters (integers: their sum does not depend on the split).
  struct Counters {
    int64_t grid_fits = 0, sub_block_refits = 0, multiply_adds = 0;
  };
  std::vector<Counters> counters(static_cast<size_t>(pool_slots(options.pool)));

  // Rows are independent in GPTQ (each row's errors are spread along that row only; H is shared),
  // so each lazy batch [i1, i2) is swept by every thread over its own rows, and all threads meet
  // before the next batch only because SparseGPT's unstructured mask looks at the whole block.
  // U's rows of the batch (bs x c floats) are shared by all threads while they are in cache.
  for (int64_t i1 = 0; i1 < c; i1 += bs) {
    const int64_t i2 = std::min(c, i1 + bs);
    if (prune) {
      if (!pattern.is_n_m()) {
        sparsegpt_mask(w.data(), rows, c, u, i1, i2, options.sparsity, pattern, mask);
      } else {
        mask.assign(static_cast<size_t>(rows * (i2 - i1)), 0);
      }
    }
    for_chunks(options.pool, rows, [&](int64_t r0, int64_t r1, int slot) {
      Counters& count = counters[static_cast<size_t>(slot)];
      std::vector<float> current(static_cast<size_t>(book.group));
      std::vector<char> group_mask;
      // Per block column: its mask is known (all at once for unstructured masks, group by group
      // for N:M, chosen on the weights as updated by the columns before the group).
      std::vector<char> decided(static_cast<size_t>(i2 - i1), prune && !pattern.is_n_m() ? 1 : 0);

      // Current values of original columns [begin, end) of row r while column position i is
      // being quantized: positions inside the batch are up to date, later ones still miss the
      // batch's pending update  -sum_{k in [i1, i)} err_k U_k,p.
      auto gather = [&](int64_t r, int64_t begin, int64_t end, int64_t i) {
        for (int64_t oc = begin; oc < end; ++oc) {
          const int64_t p = position[static_cast<size_t>(oc)];
          FRUGAL_CHECK(p >= i);  // a group is fitted before any of its columns is quantized
          float v = w[static_cast<size_t>(r * c + p)];
          // A weight already chosen for pruning takes part in the fit as the 0 it will become.
          if (prune && p < i2 && decided[static_cast<size_t>(p - i1)] && mask[static_cast<size_t>(r * (i2 - i1) + p - i1)]) v = 0.0f;
          if (p >= i2) {
            for (int64_t k = i1; k < i; ++k) v = std::fma(-err[static_cast<size_t>(r * bs + (k - i1))], u[k * c + p], v);
            count.multiply_adds += i - i1;
          }
          current[static_cast<size_t>(oc - begin)] = v;
        }
      };

      for (int64_t i = i1; i < i2; ++i) {
        if (prune && pattern.is_n_m() && (i - i1) % pattern.m == 0) {
          sparsegpt_mask(w.data() + r0 * c, r1 - r0, c, u, i, i + pattern.m, options.sparsity, pattern, group_mask);
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t j = 0; j < pattern.m; ++j) {
              mask[static_cast<size_t>(r * (i2 - i1) + i - i1 + j)] = group_mask[static_cast<size_t>((r - r0) * pattern.m + j)];
            }
          }
          for (int64_t j = 0; j < pattern.m; ++j) decided[static_cast<size_t>(i - i1 + j)] = 1;
        }
        const int64_t oc = order[static_cast<size_t>(i)];
        const int64_t g = oc / book.group;
        const int64_t s = oc / book.sub;
        if (fit_at[static_cast<size_t>(i)]) {
          const int64_t begin = book.group_begin(g), end = book.group_end(g);
          const float* imp = importance != nullptr ? importance + begin : nullptr;
          for (int64_t r = r0; r < r1; ++r) {
            gather(r, begin, end, i);
            if (target.is_format) {
              BlockGrid& bg = book.blocks[static_cast<size_t>(r * book.groups_per_row + g)];
              bg = fit_block_grid(target.type, current.data(), imp, options.fit);
              for (int64_t j = 0; j < book.subs_per_group; ++j) {
                book.grids[static_cast<size_t>(r * book.subs_per_row + g * book.subs_per_group + j)] =
                    sub_grid(bg, static_cast<int>(j));
              }
            } else {
              book.grids[static_cast<size_t>(r * book.subs_per_row + g)] =
                  fit_generic_grid(target.generic, current.data(), imp, end - begin, options.fit);
            }
          }
          count.grid_fits += r1 - r0;
        }
        if (refit_at[static_cast<size_t>(i)]) {
          const int64_t begin = s * book.sub, end = begin + book.sub;
          const int j = static_cast<int>(s - g * book.subs_per_group);
          const float* imp = importance != nullptr ? importance + begin : nullptr;
          for (int64_t r = r0; r < r1; ++r) {
            gather(r, begin, end, i);
            BlockGrid& bg = book.blocks[static_cast<size_t>(r * book.groups_per_row + g)];
            refit_sub_block(bg, j, current.data(), imp);
            book.grids[static_cast<size_t>(r * book.subs_per_row + s)] = sub_grid(bg, j);
          }
          count.sub_block_refits += r1 - r0;
        }
        // Quantize column i and spread its error over the rest of the batch (Cholesky form:
        // err = (w - q) / U_ii, W_:,j -= err * U_ij for j > i).
        const float d = u[i * c + i];
        const float* ui = u + i * c;
        for (int64_t r = r0; r < r1; ++r) {
          float* wr = w.data() + r * c;
          const AffineGrid& grid = book.grids[static_cast<size_t>(r * book.subs_per_row + s)];
          const bool pruned = prune && mask[static_cast<size_t>(r * (i2 - i1) + i - i1)];
          const int q = grid.nearest(pruned ? 0.0f : wr[i]);
          const float e = (wr[i] - grid.value(q)) / d;
          codes[static_cast<size_t>(r * c + oc)] = static_cast<int16_t>(q);
          err[static_cast<size_t>(r * bs + (i - i1))] = e;
          row_loss[static_cast<size_t>(r)] += 0.5 * static_cast<double>(e) * e;
          axpy_sub(wr + i + 1, e, ui + i + 1, i2 - i - 1);
        }
        count.multiply_adds += (r1 - r0) * (i2 - i - 1);
      }
      // Lazy batch update of all later columns: W_:,i2: -= Err U_(i1:i2),(i2:) (the paper's
      // "lazy batch-updates": the batch's rows of U are read once per row, from cache).
      if (i2 < c) {
        for (int64_t r = r0; r < r1; ++r) {
          float* wr = w.data() + r * c;
          for (int64_t k = i1; k < i2; ++k) {
            const float e = err[static_cast<size_t>(r * bs + (k - i1))];
            if (e != 0.0f) {
              axpy_sub(wr + i2, e, u + k * c + i2, c - i2);
              count.multiply_adds += c - i2;
            }
          }
        }
      }
    });
  }
  for (const Counters& count : counters) {
    result.grid_fits += count.grid_fits;
    result.sub_block_refits += count.sub_block_refits;
    result.error_update_multiply_adds += count.multiply_adds;
  }
  for (double loss : row_loss) result.proxy_loss += loss;  // in row order: independent of the split

  // Encode in the original column order.
  QuantizedMatrix& m = result.quantized;
  m.target = target;
  m.rows = rows;
  m.cols = c;
  m.values.resize(static_cast<size_t>(rows * c));
  if (target.is_format) {
    const TypeTraits& t = type_traits(target.type);
    m.row_bytes = row_bytes(t, c);
    m.data.resize(m.row_bytes * static_cast<size_t>(rows));
    for_chunks(options.pool, rows, [&](int64_t r0, int64_t r1, int) {
      int8_t q[256];
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* out = m.data.data() + static_cast<size_t>(r) * m.row_bytes;
        for (int64_t g = 0; g < book.groups_per_row; ++g) {
          for (int64_t e = 0; e < book.group; ++e) q[e] = static_cast<int8_t>(codes[static_cast<size_t>(r * c + g * book.group + e)]);
          encode_block(book.blocks[static_cast<size_t>(r * book.groups_per_row + g)], q,
                       out + static_cast<size_t>(g) * t.block_bytes);
        }
        t.dequantize_row(out, m.values.data() + r * c, c);
      }
    });
  } else {
    m.codes = std::move(codes);
    m.grids = std::move(book.grids);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t oc = 0; oc < c; ++oc) {
        m.values[static_cast<size_t>(r * c + oc)] =
            m.grids[static_cast<size_t>(r * book.subs_per_row + oc / book.sub)].value(m.codes[static_cast<size_t>(r * c + oc)]);
      }
    }
    if (const std::optional<DType> type = generic_storage_type(target.generic, c)) {
      m.row_bytes = row_bytes(type_traits(*type), c);
      m.data = encode_generic_matrix(m);
    }
  }
  return result;
}

}  // namespace frugal::compress
