// W8A8 (SmoothQuant, LLM.int8()): the smoothing fold is exact in float; LLM.int8()'s mixed int8 +
// 16-bit matmul equals the float matmul when nothing is rounded or clipped; per-token int8 inputs
// run through the public matmul on every instruction set.
#include "compress/w8a8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "support/isa_scope.h"
#include "support/synthetic_data.h"
#include "tensor/fp16.h"

namespace frugal {
namespace {

using testing::supported_isas;
using compress::Int8Matrix;
using testing::ScopedIsa;

// y = x W^T through the public matmul, with W an Int8Matrix bound as the model loader binds it.
std::vector<float> run_int8(const Int8Matrix& m, const std::vector<float>& x, int64_t tokens, ThreadPool& pool) {
  WeightMatrix w{&type_traits(DType::Q8_0), m.q8_0.data(), m.rows, m.cols, row_bytes(type_traits(DType::Q8_0), m.cols)};
  w.per_token_input = true;
  w.outlier_columns = m.outliers.data();
  w.outlier_weights = m.outlier_weight.data();
  w.n_outliers = static_cast<int64_t>(m.outliers.size());
  std::vector<uint8_t> workspace(matmul_workspace_bytes(m.cols, tokens, pool.size()));
  std::vector<float> y(static_cast<size_t>(tokens * m.rows));
  matmul(w, x.data(), m.cols, tokens, y.data(), m.rows, workspace.data(), workspace.size(), pool);
  return y;
}

std::vector<float> float_matmul(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& x, int64_t tokens) {
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t k = 0; k < cols; ++k) s += static_cast<double>(w[r * cols + k]) * x[t * cols + k];
      y[t * rows + r] = static_cast<float>(s);
    }
  }
  return y;
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * static_cast<double>(a[i] - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(SmoothQuant, FoldingLeavesFloatOutputsUnchanged) {
  const int64_t tokens = 64, cols = 96, rows = 40;
  std::mt19937 rng(3);
  std::vector<float> x = testing::llm_activations(tokens, cols, 3, rng);
  const std::vector<float> w = testing::gaussian_weights(rows, cols, rng);
  std::normal_distribution<float> normal(1.0f, 0.3f);
  std::vector<float> gamma(cols);
  for (float& g : gamma) g = normal(rng);
  // The norm's output feeds the smoothing statistics, as in the calibration pass.
  std::vector<float> normed(x.size());
  for (int64_t t = 0; t < tokens; ++t) rms_norm(x.data() + t * cols, gamma.data(), 1e-5f, cols, normed.data() + t * cols);
  const float* weights[] = {w.data()};
  const int64_t row_counts[] = {rows};
  for (float alpha : {0.0f, 0.5f, 0.85f, 1.0f}) {
    const std::vector<float> s = compress::smoothquant_scales(compress::column_abs_max(normed.data(), tokens, cols),
                                                              compress::weight_column_abs_max(weights, row_counts, cols), alpha);
    std::vector<float> gamma_folded(gamma), w_folded(w), normed_folded(x.size());
    for (int64_t j = 0; j < cols; ++j) gamma_folded[j] /= s[j];
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) w_folded[r * cols + j] *= s[j];
    }
    for (int64_t t = 0; t < tokens; ++t) rms_norm(x.data() + t * cols, gamma_folded.data(), 1e-5f, cols, normed_folded.data() + t * cols);
    const auto expected = float_matmul(w, rows, cols, normed, tokens);
    const auto folded = float_matmul(w_folded, rows, cols, normed_folded, tokens);
    EXPECT_LT(relative_error(folded, expected), 1e-5) << "alpha " << alpha;
    if (alpha > 0.0f) {
      // Smoothing shrinks the spread of the activation channel maxima (the point of it).
      const auto before = compress::column_abs_max(normed.data(), tokens, cols);
      const auto after = compress::column_abs_max(normed_folded.data(), tokens, cols);
      auto spread = [](const std::vector<float>& m) {
        return *std::max_element(m.begin(), m.end()) / *std::min_element(m.begin(), m.end());
      };
      EXPECT_LT(spread(after), spread(before)) << "alpha " << alpha;
    }
  }
}

TEST(SmoothQuant, ScalesFollowTheFormula) {
  const std::vector<float> act = {4.0f, 1.0f, 0.0f, 9.0f}, wmax = {1.0f, 0.25f, 2.0f, 0.0f};
  const auto s = compress::smoothquant_scales(act, wmax, 0.5f);
  EXPECT_FLOAT_EQ(s[0], 2.0f);  // sqrt(4) / sqrt(1)
  EXPECT_FLOAT_EQ(s[1], 2.0f);  // sqrt(1) / sqrt(0.25)
  EXPECT_FLOAT_EQ(s[2], 1.0f);  // a column that never fires is left alone
  EXPECT_FLOAT_EQ(s[3], 1.0f);
}

TEST(LlmInt8, OutlierColumnsAreThoseAtOrAboveTheThreshold) {
  const std::vector<float> act = {0.5f, 6.0f, 5.99f, 40.0f};
  EXPECT_EQ(compress::outlier_columns(act, 6.0f), (std::vector<int32_t>{1, 3}));
}

// Weights with one power-of-two step per row on the int8 grid, inputs whose non-outlier columns
// sit on a per-token int8 grid reaching +-127 steps, and outlier columns with arbitrary values
// and fp16-exact weights: nothing is rounded or clipped, so int8 + 16-bit equals float exactly
// (up to float summation order).
TEST(LlmInt8, EqualsFloatMatmulWhenNothingIsRoundedOrClipped) {
  const int64_t tokens = 9, cols = 128, rows = 24;
  const std::vector<int32_t> outliers = {5, 77, 100};
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> code(-127, 127);
  std::normal_distribution<float> normal(0.0f, 30.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(tokens * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float step = std::ldexp(1.0f, -8 - static_cast<int>(r % 3));
    for (int64_t j = 0; j < cols; ++j) w[r * cols + j] = step * static_cast<float>(code(rng));
    w[r * cols + 1] = step * 127.0f;  // the row maximum sets the step exactly
    for (int32_t j : outliers) w[r * cols + j] = fp16_to_float(float_to_fp16(normal(rng) * 0.01f));
  }
  for (int64_t t = 0; t < tokens; ++t) {
    const float step = std::ldexp(1.0f, -4 - static_cast<int>(t % 4));
    for (int64_t j = 0; j < cols; ++j) x[t * cols + j] = step * static_cast<float>(code(rng));
    x[t * cols + 0] = -step * 127.0f;
    for (int32_t j : outliers) x[t * cols + j] = normal(rng);  // far outside the int8 grid
  }
  const Int8Matrix m = compress::quantize_int8_per_channel(w.data(), rows, cols, outliers);
  EXPECT_EQ(m.values, w);
  const auto expected = float_matmul(w, rows, cols, x, tokens);
  for (Isa isa : supported_isas()) {
    ScopedIsa scoped(isa);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for (int64_t n : {int64_t{1}, tokens}) {
        const std::vector<float> xs(x.begin(), x.begin() + n * cols);
        const auto y = run_int8(m, xs, n, pool);
        for (int64_t i = 0; i < n * rows; ++i) {
          ASSERT_NEAR(y[i], expected[i], 1e-4 * (1.0 + std::fabs(expected[i]))) << isa_name(isa) << " i=" << i;
        }
      }
    }
  }
}

// Every column an outlier (threshold 0): the matmul is the 16-bit product alone.
TEST(LlmInt8, AllColumnsInSixteenBitEqualsFloatMatmul) {
  const int64_t tokens = 5, cols = 64, rows = 16;
  std::mt19937 rng(5);
  const std::vector<float> x = testing::llm_activations(tokens, cols, 2, rng);
  const std::vector<float> w = testing::gaussian_weights(rows, cols, rng);
  const auto outliers = compress::outlier_columns(compress::column_abs_max(x.data(), tokens, cols), 0.0f);
  ASSERT_EQ(static_cast<int64_t>(outliers.size()), cols);
  const Int8Matrix m = compress::quantize_int8_per_channel(w.data(), rows, cols, outliers);
  ThreadPool pool(2);
  const auto y = run_int8(m, x, tokens, pool);
  const auto expected = float_matmul(m.values, rows, cols, x, tokens);  // values = fp16(w)
  EXPECT_LT(relative_error(y, expected), 1e-6);
}

// With outlier channels in the input, per-token int8 loses the small channels; keeping the
// outliers in 16-bit (LLM.int8()) or smoothing them into the weights (SmoothQuant) recovers them.
TEST(W8A8, DecompositionAndSmoothingBeatPlainPerTokenInt8OnOutliers) {
  const int64_t tokens = 32, cols = 256, rows = 64;
  std::mt19937 rng(9);
  const std::vector<float> x = testing::llm_activations(tokens, cols, 4, rng);
  const std::vector<float> w = testing::gaussian_weights(rows, cols, rng);
  const auto expected = float_matmul(w, rows, cols, x, tokens);
  ThreadPool pool(2);
  const auto act_max = compress::column_abs_max(x.data(), tokens, cols);
  const double plain = relative_error(run_int8(compress::quantize_int8_per_channel(w.data(), rows, cols), x, tokens, pool), expected);
  const float threshold = 0.5f * *std::max_element(act_max.begin(), act_max.end());
  const auto outliers = compress::outlier_columns(act_max, threshold);
  ASSERT_FALSE(outliers.empty());
  const double decomposed =
      relative_error(run_int8(compress::quantize_int8_per_channel(w.data(), rows, cols, outliers), x, tokens, pool), expected);
  const float* weights[] = {w.data()};
  const int64_t row_counts[] = {rows};
  const auto s = compress::smoothquant_scales(act_max, compress::weight_column_abs_max(weights, row_counts, cols), 0.5f);
  std::vector<float> xs(x), ws(w);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < cols; ++j) xs[t * cols + j] /= s[j];
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) ws[r * cols + j] *= s[j];
  }
  const double smoothed = relative_error(run_int8(compress::quantize_int8_per_channel(ws.data(), rows, cols), xs, tokens, pool), expected);
  std::printf("relative output error: per-token int8 %.5f, LLM.int8() %.5f, SmoothQuant %.5f\n", plain, decomposed, smoothed);
  EXPECT_LT(decomposed, 0.5 * plain);
  EXPECT_LT(smoothed, 0.7 * plain);
}

}  // namespace
}  // namespace frugal
