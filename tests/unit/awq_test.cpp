// Unit tests of compress/awq: never worse than round-to-nearest, clearly better when the input
// has outlier channels (formats and generic groups, 3 and 4 bits), one shared scale vector for
// weights with a common input (Q, K, V), and reported errors that match a direct computation.
#include "compress/awq.h"
#include "support/synthetic_data.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace frugal::compress {
namespace {

using testing::gaussian_weights;
using testing::llm_activations;

// ||X W^T - (X / s) Q^T||^2 computed token by token (s null = 1).
double direct_error(const std::vector<float>& x, int64_t tokens, const float* w, const std::vector<float>& q,
                    const std::vector<float>* s, int64_t rows, int64_t cols) {
  double total = 0.0;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t r = 0; r < rows; ++r) {
      double y = 0.0, yq = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        y += static_cast<double>(xt[c]) * w[r * cols + c];
        yq += static_cast<double>(xt[c]) / (s ? (*s)[static_cast<size_t>(c)] : 1.0f) * q[static_cast<size_t>(r * cols + c)];
      }
      total += (y - yq) * (y - yq);
    }
  }
  return total;
}

// AWQ with the paper's round-to-nearest quantizer against plain round-to-nearest.
TEST(Awq, BeatsRoundToNearestWithOutlierChannels) {
  std::mt19937 rng(1);
  const int64_t rows = 32, tokens = 256;
  const QuantTarget targets[] = {QuantTarget::format(DType::Q4_0), QuantTarget::format(DType::Q4_K),
                                 QuantTarget::format(DType::Q3_K), QuantTarget::generic_grid(4, 128, false),
                                 QuantTarget::generic_grid(3, 128, false)};
  for (const QuantTarget& target : targets) {
    const int64_t cols = 256;
    for (int outliers : {0, 6}) {
      const std::vector<float> x = llm_activations(tokens, cols, outliers, rng);
      const std::vector<float> w = gaussian_weights(rows, cols, rng);
      const AwqWeight weight{w.data(), rows};
      auto result = awq_quantize({&weight, 1}, cols, x.data(), tokens, target);
      ASSERT_TRUE(result.is_ok()) << result.status().message();
      const AwqResult& r = *result;
      std::printf("[ awq      ] %-15s %d outlier channels: alpha %.2f, error/RTN scaled %.3f, final %.3f%s\n",
                  target.name().c_str(), outliers, r.alpha, r.error_scaled / r.error_rtn, r.error / r.error_rtn,
                  r.clipped ? " (clipped)" : "");
      EXPECT_LE(r.error, r.error_scaled);
      EXPECT_LE(r.error_scaled, r.error_rtn);
      if (outliers > 0) {
        EXPECT_LT(r.error, 0.8 * r.error_rtn) << target.name();
        EXPECT_GT(r.alpha, 0.0f);
      }
    }
  }
}

// Q, K and V share their input and so one scale vector; the errors are summed over the three.
TEST(Awq, SharedInputWeightsShareOneScaleVector) {
  std::mt19937 rng(2);
  const int64_t cols = 256, tokens = 320;  // more tokens than columns: errors go through the Cholesky sketch
  const std::vector<float> x = llm_activations(tokens, cols, 4, rng);
  const std::vector<float> wq = gaussian_weights(128, cols, rng);
  const std::vector<float> wk = gaussian_weights(32, cols, rng);
  const std::vector<float> wv = gaussian_weights(32, cols, rng);
  const AwqWeight weights[] = {{wq.data(), 128}, {wk.data(), 32}, {wv.data(), 32}};
  const QuantTarget target = QuantTarget::format(DType::Q4_0);
  auto result = awq_quantize(weights, cols, x.data(), tokens, target);
  ASSERT_TRUE(result.is_ok()) << result.status().message();
  const AwqResult& r = *result;
  ASSERT_EQ(r.scales.size(), static_cast<size_t>(cols));
  ASSERT_EQ(r.quantized.size(), 3u);
  double direct = 0.0, direct_rtn = 0.0, reference = 0.0;
  for (int k = 0; k < 3; ++k) {
    const QuantizedMatrix& q = r.quantized[static_cast<size_t>(k)];
    ASSERT_EQ(q.rows, weights[k].rows);
    ASSERT_EQ(q.data.size(), q.row_bytes * static_cast<size_t>(q.rows));
    // The values are what the stored blocks decode to.
    std::vector<float> decoded(static_cast<size_t>(q.rows * cols));
    for (int64_t row = 0; row < q.rows; ++row) {
      type_traits(target.type).dequantize_row(q.data.data() + row * q.row_bytes, decoded.data() + row * cols, cols);
    }
    EXPECT_EQ(decoded, q.values);
    direct += direct_error(x, tokens, weights[k].data, q.values, &r.scales, q.rows, cols);
    const QuantizedMatrix rtn = quantize_matrix(target, weights[k].data, weights[k].rows, cols, nullptr, GridFit::kMinMax);
    direct_rtn += direct_error(x, tokens, weights[k].data, rtn.values, nullptr, q.rows, cols);
    reference += direct_error(x, tokens, weights[k].data, std::vector<float>(static_cast<size_t>(q.rows * cols), 0.0f), nullptr, q.rows, cols);
  }
  EXPECT_NEAR(r.error, direct, 1e-3 * direct);
  EXPECT_NEAR(r.error_rtn, direct_rtn, 1e-3 * direct_rtn);
  EXPECT_NEAR(r.reference, reference, 1e-3 * reference);
  EXPECT_LT(r.error, 0.9 * r.error_rtn);
}

// Fewer tokens than columns (the errors use X itself) and the importance-weighted quantizer.
TEST(Awq, FewTokensAndSearchedGrids) {
  std::mt19937 rng(3);
  const int64_t cols = 512, tokens = 96, rows = 48;
  const std::vector<float> x = llm_activations(tokens, cols, 5, rng);
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  const AwqWeight weight{w.data(), rows};
  AwqOptions options;
  options.fit = GridFit::kSearch;
  auto result = awq_quantize({&weight, 1}, cols, x.data(), tokens, QuantTarget::generic_grid(4, 64, true), options);
  ASSERT_TRUE(result.is_ok());
  const double direct = direct_error(x, tokens, w.data(), result->quantized[0].values, &result->scales, rows, cols);
  EXPECT_NEAR(result->error, direct, 1e-3 * direct);
  EXPECT_LE(result->error, result->error_rtn);
  std::printf("[ awq      ] int4 g64 sym, searched grids, 96 tokens: error/RTN(searched) %.3f\n", result->error / result->error_rtn);

  auto bad = awq_quantize({&weight, 1}, cols, x.data(), tokens, QuantTarget::format(DType::Q4_K),
                          AwqOptions{.alpha_grid = 0});
  EXPECT_FALSE(bad.is_ok());
  auto misfit = awq_quantize({&weight, 1}, 500, x.data(), tokens, QuantTarget::format(DType::Q4_0));
  EXPECT_FALSE(misfit.is_ok());
}

}  // namespace
}  // namespace frugal::compress
