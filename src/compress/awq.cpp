// AWQ scale search and clipping search with exact output errors computed through a small
// "sketch" of the calibration inputs (see awq.h).
#include "compress/awq.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/check.h"
#include "compress/gptq.h"
#include "compress/parallel.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace frugal::compress {
namespace {

int64_t round_up8(int64_t n) { return (n + 7) / 8 * 8; }

// Four float dot products of a0..a3 with b over n elements (n a multiple of 8), b loaded once
// for all four. AVX2/FMA is the project's baseline ISA; the portable loop keeps other targets
// building.
void dot4(const float* a0, const float* a1, const float* a2, const float* a3, const float* b,
          int64_t n, float out[4]) {
#if defined(__AVX2__) && defined(__FMA__)
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
    out[r] = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  }
#else
  const float* a[4] = {a0, a1, a2, a3};
  for (int r = 0; r < 4; ++r) {
    float partial[8] = {};
    for (int64_t t = 0; t < n; t += 8) {
      for (int k = 0; k < 8; ++k) partial[k] += a[r][t + k] * b[t + k];
    }
    out[r] = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
  }
#endif
}

// One float dot product over n elements (any n).
float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 s0 = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s0);
  sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Rows z_k of a matrix Z with Z^T Z = X^T X, so that ||X d||^2 = sum_k (z_k . d)^2 costs
// min(tokens, cols) dot products per weight row whatever the number of calibration tokens:
// Z = X itself when there are at most `cols` tokens, otherwise Z = V^T from X^T X = V V^T
// (V upper triangular, so row k of Z is zero past column k).
struct ActivationSketch {
  int64_t rows = 0;
  int64_t stride = 0;            // cols rounded up to 8; the padding is zero
  std::vector<float> z;          // rows * stride
  std::vector<int64_t> length;   // per row: nonzero prefix rounded up to 8
};

ActivationSketch make_sketch(const float* x, int64_t tokens, int64_t cols, const std::vector<double>& gram, ThreadPool* pool) {
  ActivationSketch s;
  s.stride = round_up8(cols);
  if (tokens <= cols) {
    s.rows = tokens;
    s.z.assign(static_cast<size_t>(tokens * s.stride), 0.0f);
    s.length.assign(static_cast<size_t>(tokens), s.stride);
    for (int64_t t = 0; t < tokens; ++t) std::copy(x + t * cols, x + (t + 1) * cols, s.z.begin() + t * s.stride);
    return s;
  }
  double mean_diag = 0.0;
  for (int64_t i = 0; i < cols; ++i) mean_diag += gram[static_cast<size_t>(i * cols + i)];
  mean_diag /= static_cast<double>(cols);
  if (!(mean_diag > 0.0)) return s;  // all inputs zero: every output error is zero
  // A relative jitter of 1e-9 keeps rank-deficient Gram matrices (dead channels) factorable and
  // changes the errors by about that much.
  std::vector<double> v(gram.size());
  for (double jitter = 1e-9;; jitter *= 100.0) {
    v = gram;
    for (int64_t i = 0; i < cols; ++i) v[static_cast<size_t>(i * cols + i)] += jitter * mean_diag;
    if (factor_upper_cholesky(v.data(), cols, pool)) break;
    FRUGAL_CHECK(jitter < 1e-2);  // a Gram matrix plus 1% of its mean diagonal is positive definite
  }
  s.rows = cols;
  s.z.assign(static_cast<size_t>(cols * s.stride), 0.0f);
  s.length.resize(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t k = 0; k <= i; ++k) s.z[static_cast<size_t>(i * s.stride + k)] = static_cast<float>(v[static_cast<size_t>(k * cols + i)]);
    s.length[static_cast<size_t>(i)] = round_up8(i + 1);
  }
  return s;
}

// Sum over the `count` rows d_r (stride floats each, zero padded) of ||Z d_r||^2. Row quads are
// split over the threads; each quad's sum is kept apart and the quads are added in order, so the
// total does not depend on the thread count.
double sketch_error(const ActivationSketch& s, const float* d, int64_t count, ThreadPool* pool) {
  const int64_t quads = (count + 3) / 4;
  std::vector<double> partial(static_cast<size_t>(quads), 0.0);
  for_chunks(pool, quads, [&](int64_t q0, int64_t q1, int) {
    for (int64_t quad = q0; quad < q1; ++quad) {
      const int64_t r = quad * 4;
      const float* a[4];
      for (int k = 0; k < 4; ++k) a[k] = d + std::min(r + k, count - 1) * s.stride;
      const int live = static_cast<int>(std::min<int64_t>(4, count - r));
      double total = 0.0;
      for (int64_t k = 0; k < s.rows; ++k) {
        float out[4];
        dot4(a[0], a[1], a[2], a[3], s.z.data() + k * s.stride, s.length[static_cast<size_t>(k)], out);
        for (int j = 0; j < live; ++j) total += static_cast<double>(out[j]) * out[j];
      }
      partial[static_cast<size_t>(quad)] = total;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

Result<AwqResult> awq_quantize(std::span<const AwqWeight> weights, int64_t cols, const float* x,
                               int64_t tokens, const QuantTarget& target, const AwqOptions& options) {
  FRUGAL_RETURN_IF_ERROR(check_target(target, cols));
  if (weights.empty()) return Status::error("awq: no weights given");
  if (x == nullptr || tokens <= 0) return Status::error("awq: no calibration activations given");
  for (const AwqWeight& wt : weights) {
    if (wt.data == nullptr || wt.rows <= 0) return Status::error("awq: empty weight matrix");
  }
  if (options.alpha_grid < 1 || options.clip_grid < 1 || !(options.max_shrink >= 0.0 && options.max_shrink < 1.0)) {
    return Status::error("awq: alpha_grid and clip_grid must be >= 1 and max_shrink in [0, 1)");
  }
  const int64_t c = cols;

  // Per-channel mean |x| (AWQ's activation salience) and the Gram matrix X^T X.
  std::vector<double> mean_abs(static_cast<size_t>(c), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < c; ++i) mean_abs[static_cast<size_t>(i)] += std::fabs(x[t * c + i]);
  }
  for (double& v : mean_abs) v /= static_cast<double>(tokens);
  HessianAccumulator acc(c, HessianAccumulator::Precision::kFloat64);
  acc.add(x, tokens, 0, options.pool);
  const std::vector<double> gram = acc.gram();
  const ActivationSketch sketch = make_sketch(x, tokens, c, gram, options.pool);

  int64_t max_rows = 0;
  for (const AwqWeight& wt : weights) max_rows = std::max(max_rows, wt.rows);
  std::vector<float> scaled(static_cast<size_t>(max_rows * c));
  std::vector<float> diff(static_cast<size_t>(max_rows * sketch.stride), 0.0f);
  std::vector<float> importance(static_cast<size_t>(c));

  // s = mean|x|^alpha, floored at 1e-4 and normalized by sqrt(max s * min s) as llm-awq does.
  auto scales_for = [&](double alpha) {
    std::vector<float> s(static_cast<size_t>(c));
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < c; ++i) {
      s[static_cast<size_t>(i)] = static_cast<float>(std::max(std::pow(mean_abs[static_cast<size_t>(i)], alpha), 1e-4));
      lo = i == 0 ? s[0] : std::min(lo, s[static_cast<size_t>(i)]);
      hi = std::max(hi, s[static_cast<size_t>(i)]);
    }
    const float norm = std::sqrt(hi * lo);
    for (float& v : s) v /= norm;
    return s;
  };
  // Quantizes W diag(s) (after optional clamping to +-limit per row and group); error weights of
  // the search fit are E[x^2] / s^2, the weight of a scaled-domain error in the output.
  auto quantize_scaled = [&](const AwqWeight& wt, const std::vector<float>& s, const float* limit,
                             int64_t clip_group) {
    for_chunks(options.pool, wt.rows, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t i = 0; i < c; ++i) {
          float v = wt.data[r * c + i] * s[static_cast<size_t>(i)];
          if (limit != nullptr) {
            const float l = limit[r * ((c + clip_group - 1) / clip_group) + i / clip_group];
            v = std::clamp(v, -l, l);
          }
          scaled[static_cast<size_t>(r * c + i)] = v;
        }
      }
    });
    for (int64_t i = 0; i < c; ++i) {
      const double si = s[static_cast<size_t>(i)];
      importance[static_cast<size_t>(i)] = static_cast<float>(gram[static_cast<size_t>(i * c + i)] / (si * si));
    }
    return quantize_matrix(target, scaled.data(), wt.rows, c, importance.data(), options.fit, options.pool);
  };
  // ||X W^T - (X / s) Q^T||^2 = ||X (W - Q diag(1/s))^T||^2.
  auto output_error = [&](const AwqWeight& wt, const QuantizedMatrix* q, const std::vector<float>* s) {
    for_chunks(options.pool, wt.rows, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t i = 0; i < c; ++i) {
          float v = wt.data[r * c + i];
          if (q != nullptr) v -= q->values[static_cast<size_t>(r * c + i)] / (*s)[static_cast<size_t>(i)];
          diff[static_cast<size_t>(r * sketch.stride + i)] = v;
        }
      }
    });
    return sketch_error(sketch, diff.data(), wt.rows, options.pool);
  };

  AwqResult result;
  for (const AwqWeight& wt : weights) result.reference += output_error(wt, nullptr, nullptr);

  // Scale search over alpha; alpha = 0 gives s = 1 exactly, i.e. round-to-nearest.
  double best = 0.0;
  for (int k = 0; k < options.alpha_grid; ++k) {
    const double alpha = options.alpha_grid == 1 ? 0.0 : static_cast<double>(k) / (options.alpha_grid - 1);
    std::vector<float> s = scales_for(alpha);
    std::vector<QuantizedMatrix> q;
    double err = 0.0;
    for (const AwqWeight& wt : weights) {
      q.push_back(quantize_scaled(wt, s, nullptr, 1));
      err += output_error(wt, &q.back(), &s);
    }
    if (k == 0) result.error_rtn = err;
    if (k == 0 || err < best) {
      best = err;
      result.alpha = static_cast<float>(alpha);
      result.scales = std::move(s);
      result.quantized = std::move(q);
    }
  }
  result.error_scaled = best;
  result.error = best;
  if (!options.search_clip) return result;

  // Clipping search per (row, group) of the scaled weights, judged by that group's share of the
  // output error (w - q)_g^T H_gg (w - q)_g with H = diag(1/s) X^T X diag(1/s), as llm-awq's
  // auto_clip judges each group's partial output. Groups are the format's sub-blocks (the range
  // one scale covers) or the generic groups.
  const std::vector<float>& s = result.scales;
  const int64_t group = target.sub_size(c);
  const int64_t groups = (c + group - 1) / group;
  std::vector<float> blocks(static_cast<size_t>(groups * group * group), 0.0f);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t b = g * group, len = std::min(group, c - b);
    float* h = blocks.data() + g * group * group;
    for (int64_t i = 0; i < len; ++i) {
      for (int64_t j = 0; j < len; ++j) {
        h[i * group + j] = static_cast<float>(gram[static_cast<size_t>((b + i) * c + b + j)] /
                                              (static_cast<double>(s[static_cast<size_t>(b + i)]) * s[static_cast<size_t>(b + j)]));
      }
    }
  }
  std::vector<QuantizedMatrix> clipped_q;
  double clipped_error = 0.0;
  for (const AwqWeight& wt : weights) {
    const int64_t rows = wt.rows;
    std::vector<float> amax(static_cast<size_t>(rows * groups), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < c; ++i) {
        float& a = amax[static_cast<size_t>(r * groups + i / group)];
        a = std::max(a, std::fabs(wt.data[r * c + i] * s[static_cast<size_t>(i)]));
      }
    }
    std::vector<float> best_limit = amax;
    std::vector<double> best_err(static_cast<size_t>(rows * groups), 0.0);
    std::vector<float> limit(amax.size());
    const int steps = static_cast<int>(std::floor(options.max_shrink * options.clip_grid + 1e-9));
    for (int k = 0; k <= steps; ++k) {
      const float ratio = 1.0f - static_cast<float>(k) / static_cast<float>(options.clip_grid);
      for (size_t i = 0; i < amax.size(); ++i) limit[i] = amax[i] * ratio;
      const QuantizedMatrix q = quantize_scaled(wt, s, limit.data(), group);
      // Each (row, group) keeps its own best, so rows are split over the threads.
      for_chunks(options.pool, rows, [&](int64_t r0, int64_t r1, int) {
        float* d = diff.data() + r0 * sketch.stride;  // scratch of this chunk: a group's scaled-domain error
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t g = 0; g < groups; ++g) {
            const int64_t b = g * group, len = std::min(group, c - b);
            const float* h = blocks.data() + g * group * group;
            for (int64_t i = 0; i < len; ++i) {
              d[i] = wt.data[r * c + b + i] * s[static_cast<size_t>(b + i)] - q.values[static_cast<size_t>(r * c + b + i)];
            }
            double e = 0.0;
            for (int64_t i = 0; i < len; ++i) e += static_cast<double>(d[i]) * dot(h + i * group, d, len);
            const size_t idx = static_cast<size_t>(r * groups + g);
            if (k == 0 || e < best_err[idx]) {
              best_err[idx] = e;
              best_limit[idx] = limit[idx];
            }
          }
        }
      });
    }
    clipped_q.push_back(quantize_scaled(wt, s, best_limit.data(), group));
    clipped_error += output_error(wt, &clipped_q.back(), &s);
  }
  // The per-group choices interact (a K-quant block shares d, groups share outputs), so the
  // clipped result is kept only if the whole layer's output error went down.
  if (clipped_error < result.error) {
    result.error = clipped_error;
    result.quantized = std::move(clipped_q);
    result.clipped = true;
  }
  return result;
}

}  // namespace frugal::compress
