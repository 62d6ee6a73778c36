// Unit tests of compress/gptq: Hessian accumulation, the Cholesky factor of H^-1, reduction to
// round-to-nearest for a diagonal Hessian, lower output error than RTN on correlated LLM-like
// activations (3 and 4 bits, formats and generic groups, with and without act-order), dead
// columns, and speed on a SmolLM2-sized matrix.
#include "compress/gptq.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "support/synthetic_data.h"

namespace frugal::compress {
namespace {

using testing::gaussian_weights;
using testing::llm_activations;

// ||X W^T - X Q^T||^2 = sum_r (w_r - q_r)^T G (w_r - q_r), G = X^T X (G d accumulated as rows
// of G scaled by d_i, a loop that vectorizes).
double output_error(const std::vector<double>& gram, const std::vector<float>& w, const std::vector<float>& q,
                    int64_t rows, int64_t cols) {
  double total = 0.0;
  std::vector<double> d(static_cast<size_t>(cols)), gd(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[static_cast<size_t>(c)] = static_cast<double>(w[static_cast<size_t>(r * cols + c)]) - q[static_cast<size_t>(r * cols + c)];
    std::fill(gd.begin(), gd.end(), 0.0);
    for (int64_t i = 0; i < cols; ++i) {
      const double di = d[static_cast<size_t>(i)];
      const double* gi = gram.data() + i * cols;
      for (int64_t j = 0; j < cols; ++j) gd[static_cast<size_t>(j)] += di * gi[j];
    }
    for (int64_t i = 0; i < cols; ++i) total += d[static_cast<size_t>(i)] * gd[static_cast<size_t>(i)];
  }
  return total;
}

TEST(Gptq, HessianAccumulatorMatchesDirectSums) {
  std::mt19937 rng(1);
  const int64_t n = 300, cols = 37, stride = 40;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * stride));
  for (float& v : x) v = normal(rng);
  std::vector<double> direct(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        direct[static_cast<size_t>(i * cols + j)] += static_cast<double>(x[static_cast<size_t>(t * stride + i)]) * x[static_cast<size_t>(t * stride + j)];
      }
    }
  }
  for (auto precision : {HessianAccumulator::Precision::kFloat64, HessianAccumulator::Precision::kFloat32}) {
    HessianAccumulator acc(cols, precision);
    acc.add(x.data(), 100, stride);
    acc.add(x.data() + 100 * stride, 1, stride);
    acc.add(x.data() + 101 * stride, n - 101, stride);
    EXPECT_EQ(acc.samples(), n);
    const std::vector<double> g = acc.gram();
    const std::vector<double> h = acc.hessian();
    const double tol = precision == HessianAccumulator::Precision::kFloat64 ? 1e-10 : 1e-4;
    for (size_t i = 0; i < g.size(); ++i) {
      ASSERT_NEAR(g[i], direct[i], tol * (1.0 + std::fabs(direct[i]))) << i;
      ASSERT_NEAR(h[i], 2.0 * g[i] / n, 1e-12 * (1.0 + std::fabs(h[i])));
    }
  }
}

TEST(Gptq, UpperFactorOfTheInverse) {
  std::mt19937 rng(2);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t n = 45;
  std::vector<double> b(static_cast<size_t>(n * n)), a(static_cast<size_t>(n * n), 0.0);
  for (double& v : b) v = normal(rng);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t k = 0; k < n; ++k) a[static_cast<size_t>(i * n + j)] += b[static_cast<size_t>(i * n + k)] * b[static_cast<size_t>(j * n + k)];
    }
    a[static_cast<size_t>(i * n + i)] += 0.1;
  }
  std::vector<double> u = a;
  ASSERT_TRUE(factor_upper_cholesky(u.data(), n));
  // V V^T = A with V upper.
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (j < i) {
        ASSERT_EQ(u[static_cast<size_t>(i * n + j)], 0.0);
      }
      double s = 0.0;
      for (int64_t k = 0; k < n; ++k) s += u[static_cast<size_t>(i * n + k)] * u[static_cast<size_t>(j * n + k)];
      ASSERT_NEAR(s, a[static_cast<size_t>(i * n + j)], 1e-9 * (1.0 + std::fabs(a[static_cast<size_t>(i * n + j)])));
    }
  }
  invert_upper_triangular(u.data(), n);
  // U^T U A = I.
  std::vector<double> utu(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t k = 0; k < n; ++k) utu[static_cast<size_t>(i * n + j)] += u[static_cast<size_t>(k * n + i)] * u[static_cast<size_t>(k * n + j)];
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < n; ++k) s += utu[static_cast<size_t>(i * n + k)] * a[static_cast<size_t>(k * n + j)];
      ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-7);
    }
  }
  std::vector<double> indefinite = {1.0, 2.0, 2.0, 1.0};
  EXPECT_FALSE(factor_upper_cholesky(indefinite.data(), 2));
}

std::vector<QuantTarget> all_targets() {
  std::vector<QuantTarget> t;
  for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                     DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    t.push_back(QuantTarget::format(type));
  }
  t.push_back(QuantTarget::generic_grid(4, 128, false));
  t.push_back(QuantTarget::generic_grid(3, 0, true));
  t.push_back(QuantTarget::generic_grid(2, 100, false));
  return t;
}

// With a diagonal H no error is ever propagated, so GPTQ is round-to-nearest on the same grids:
// bit-identical to the traits' quantize_row for kMinMax, equal values for the search fit. With
// act-order the columns go in another order, but the static groups keep the result unchanged.
TEST(Gptq, DiagonalHessianReducesToRoundToNearest) {
  std::mt19937 rng(3);
  const int64_t rows = 6, cols = 512;
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  std::uniform_real_distribution<double> uniform(0.5, 2.0);
  for (bool identity : {true, false}) {
    std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
    for (int64_t i = 0; i < cols; ++i) h[static_cast<size_t>(i * cols + i)] = identity ? 1.0 : uniform(rng);
    GptqOptions options;
    options.act_order = !identity;
    options.refit_sub_blocks = false;
    auto prepared = gptq_prepare(h.data(), cols, options);
    ASSERT_TRUE(prepared.is_ok());
    if (!identity) {
      EXPECT_FALSE(std::is_sorted(prepared->order.begin(), prepared->order.end()));
    }
    for (const QuantTarget& target : all_targets()) {
      SCOPED_TRACE(target.name() + (identity ? " identity" : " random diagonal"));
      for (GridFit fit : {GridFit::kMinMax, GridFit::kSearch}) {
        options.fit = fit;
        // The search weights its fit by diag(H); RTN gets the same importance.
        std::vector<float> importance(static_cast<size_t>(cols));
        for (int64_t i = 0; i < cols; ++i) importance[static_cast<size_t>(i)] = static_cast<float>(h[static_cast<size_t>(i * cols + i)]);
        auto result = gptq_quantize(w.data(), rows, cols, *prepared, target, options);
        ASSERT_TRUE(result.is_ok()) << result.status().message();
        const QuantizedMatrix rtn = quantize_matrix(target, w.data(), rows, cols, importance.data(), fit);
        EXPECT_EQ(result->quantized.values, rtn.values);
        if (fit == GridFit::kMinMax) {
          EXPECT_EQ(result->quantized.data, rtn.data);
          EXPECT_EQ(result->quantized.codes, rtn.codes);
        }
      }
    }
  }
}

struct Errors {
  double rtn = 0, rtn_weighted = 0, gptq_minmax = 0, gptq_search = 0;
};

// GPTQ against round-to-nearest on the same format, on correlated activations with outliers.
TEST(Gptq, BeatsRoundToNearestOnCorrelatedActivations) {
  std::mt19937 rng(4);
  const int64_t rows = 96, cols = 512, tokens = 1024;
  const std::vector<float> x = llm_activations(tokens, cols, 4, rng);
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  HessianAccumulator acc(cols);
  acc.add(x.data(), tokens);
  const std::vector<double> gram = acc.gram();
  const std::vector<double> h = acc.hessian();
  std::vector<float> importance(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) importance[static_cast<size_t>(i)] = static_cast<float>(h[static_cast<size_t>(i * cols + i)]);

  const QuantTarget targets[] = {QuantTarget::format(DType::Q3_K), QuantTarget::generic_grid(3, 128, false),
                                 QuantTarget::format(DType::Q4_K), QuantTarget::format(DType::Q4_0),
                                 QuantTarget::generic_grid(4, 128, false)};
  GptqOptions in_order, act_order;
  act_order.act_order = true;
  auto prepared_in_order = gptq_prepare(h.data(), cols, in_order);
  auto prepared_act_order = gptq_prepare(h.data(), cols, act_order);
  ASSERT_TRUE(prepared_in_order.is_ok() && prepared_act_order.is_ok());
  for (const QuantTarget& target : targets) {
    Errors e;
    e.rtn = output_error(gram, w, quantize_matrix(target, w.data(), rows, cols, nullptr, GridFit::kMinMax).values, rows, cols);
    e.rtn_weighted = output_error(gram, w, quantize_matrix(target, w.data(), rows, cols, importance.data(), GridFit::kSearch).values, rows, cols);
    for (bool act_order : {false, true}) {
      SCOPED_TRACE(target.name() + (act_order ? " act-order" : ""));
      GptqOptions options;
      options.act_order = act_order;
      const GptqHessian& prepared = act_order ? *prepared_act_order : *prepared_in_order;
      options.fit = GridFit::kMinMax;
      auto minmax = gptq_quantize(w.data(), rows, cols, prepared, target, options);
      options.fit = GridFit::kSearch;
      auto search = gptq_quantize(w.data(), rows, cols, prepared, target, options);
      ASSERT_TRUE(minmax.is_ok() && search.is_ok());
      e.gptq_minmax = output_error(gram, w, minmax->quantized.values, rows, cols);
      e.gptq_search = output_error(gram, w, search->quantized.values, rows, cols);
      std::printf("[ gptq     ] %-15s %-9s error/RTN: weighted RTN %.3f, GPTQ min/max grids %.3f, GPTQ searched grids %.3f\n",
                  target.name().c_str(), act_order ? "act-order" : "in order", e.rtn_weighted / e.rtn,
                  e.gptq_minmax / e.rtn, e.gptq_search / e.rtn);
      EXPECT_LT(e.gptq_minmax, 0.8 * e.rtn);
      EXPECT_LT(e.gptq_search, 0.8 * e.rtn);
      EXPECT_LT(e.gptq_search, e.rtn_weighted);
    }
  }
}

// Lazy batches are an exact reordering of the updates: groups fitted mid-batch (a generic group
// of 100 straddles the 128-column batches; act-order touches groups anywhere) must see the
// pending updates. All updates are fused multiply-adds in one order, so the result is
// bit-identical to a single batch over all columns, for every batch size.
TEST(Gptq, LazyBatchesMatchOneBatchExactly) {
  std::mt19937 rng(7);
  const int64_t rows = 24, cols = 512, tokens = 768;
  const std::vector<float> x = llm_activations(tokens, cols, 3, rng);
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  HessianAccumulator acc(cols);
  acc.add(x.data(), tokens);
  const std::vector<double> h = acc.hessian();
  for (const QuantTarget& target : {QuantTarget::generic_grid(3, 100, false), QuantTarget::format(DType::Q4_K),
                                    QuantTarget::format(DType::Q5_0)}) {
    for (bool act_order : {false, true}) {
      SCOPED_TRACE(target.name() + (act_order ? " act-order" : ""));
      GptqOptions options;
      options.act_order = act_order;
      auto prepared = gptq_prepare(h.data(), cols, options);
      ASSERT_TRUE(prepared.is_ok());
      options.block_size = cols;
      auto single = gptq_quantize(w.data(), rows, cols, *prepared, target, options);
      ASSERT_TRUE(single.is_ok());
      for (int64_t block_size : {int64_t{1}, int64_t{50}, int64_t{128}}) {
        options.block_size = block_size;
        auto batched = gptq_quantize(w.data(), rows, cols, *prepared, target, options);
        ASSERT_TRUE(batched.is_ok());
        EXPECT_EQ(batched->quantized.values, single->quantized.values) << "block size " << block_size;
        EXPECT_EQ(batched->quantized.data, single->quantized.data) << "block size " << block_size;
      }
    }
  }
}

TEST(Gptq, DeadColumnIsZeroedAndHarmless) {
  std::mt19937 rng(5);
  const int64_t rows = 16, cols = 256, tokens = 512;
  std::vector<float> x = llm_activations(tokens, cols, 2, rng);
  for (int64_t t = 0; t < tokens; ++t) {
    x[static_cast<size_t>(t * cols + 7)] = 0.0f;
    x[static_cast<size_t>(t * cols + 200)] = 0.0f;
  }
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  HessianAccumulator acc(cols);
  acc.add(x.data(), tokens);
  const std::vector<double> h = acc.hessian();
  for (const QuantTarget& target : {QuantTarget::format(DType::Q4_K), QuantTarget::generic_grid(4, 64, true)}) {
    for (bool act_order : {false, true}) {
      GptqOptions options;
      options.act_order = act_order;
      auto result = gptq_quantize(w.data(), rows, cols, h.data(), target, options);
      ASSERT_TRUE(result.is_ok()) << result.status().message();
      EXPECT_EQ(result->dead_columns, 2);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) ASSERT_TRUE(std::isfinite(result->quantized.values[static_cast<size_t>(r * cols + c)]));
        // The dead weights were set to 0 before quantizing: their value is the grid point nearest 0.
        for (int64_t c : {int64_t{7}, int64_t{200}}) {
          float nearest_zero_step = 0.0f;
          if (target.is_format) {
            const auto* row = result->quantized.data.data() + r * result->quantized.row_bytes;
            const BlockGrid g = read_block_grid(target.type, row + (c / 256) * type_traits(target.type).block_bytes);
            const AffineGrid sg = sub_grid(g, static_cast<int>((c % 256) / 32));
            nearest_zero_step = std::fabs(sg.value(sg.nearest(0.0f)));
          }
          EXPECT_LE(std::fabs(result->quantized.values[static_cast<size_t>(r * cols + c)]), nearest_zero_step + 1e-12f);
        }
      }
    }
  }
  // An all-zero Hessian is all dead columns: every weight becomes the grid point nearest 0.
  std::vector<double> zero(static_cast<size_t>(cols * cols), 0.0);
  auto result = gptq_quantize(w.data(), rows, cols, zero.data(), QuantTarget::generic_grid(4, 64, true));
  ASSERT_TRUE(result.is_ok());
  EXPECT_EQ(result->dead_columns, cols);
  for (float v : result->quantized.values) ASSERT_EQ(v, 0.0f);
}

TEST(Gptq, RejectsRowsThatDoNotFitTheFormat) {
  std::vector<float> w(576, 0.0f);
  std::vector<double> h(576 * 576, 0.0);
  for (int i = 0; i < 576; ++i) h[static_cast<size_t>(i * 576 + i)] = 1.0;
  auto result = gptq_quantize(w.data(), 1, 576, h.data(), QuantTarget::format(DType::Q4_K));
  EXPECT_FALSE(result.is_ok());
  EXPECT_NE(result.status().message().find("256"), std::string::npos) << result.status().message();
}

// A SmolLM2-135M MLP matrix (1536 x 576). GPTQ's cost is asserted as work, not wall-clock time
// (the machines are shared): every group's grid is fitted once per row, and spreading the
// rounding errors costs at most one multiply-add per row and pair of columns (i < j), the
// O(rows * cols^2) of the Cholesky form with lazy batch updates (Frantar et al. 2022, Sec. 3).
TEST(Gptq, TypicalMatrixDoesTheExpectedWork) {
  std::mt19937 rng(6);
  const int64_t rows = 1536, cols = 576, tokens = 640;
  const std::vector<float> x = llm_activations(tokens, cols, 3, rng);
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  HessianAccumulator acc(cols, HessianAccumulator::Precision::kFloat32);
  acc.add(x.data(), tokens);
  const std::vector<double> h = acc.hessian();
  const int64_t pairs = rows * cols * (cols - 1) / 2;
  for (const auto& [target, group] : {std::pair{QuantTarget::format(DType::Q4_0), int64_t{32}},
                                      std::pair{QuantTarget::generic_grid(4, 64, false), int64_t{64}}}) {
    auto result = gptq_quantize(w.data(), rows, cols, h.data(), target);
    ASSERT_TRUE(result.is_ok()) << result.status().message();
    EXPECT_EQ(result->grid_fits, rows * (cols / group)) << target.name();
    EXPECT_EQ(result->sub_block_refits, 0) << target.name();
    // Batches of 128 hold whole groups, so no group needs its pending updates gathered; errors
    // that are exactly 0 (a weight on a grid point) skip their lazy update.
    EXPECT_LE(result->error_update_multiply_adds, pairs) << target.name();
    EXPECT_GE(result->error_update_multiply_adds, pairs * 9 / 10) << target.name();
  }
  // Act-order with a K-quant: groups are fitted when their first column comes up, which may be
  // in an earlier batch than the rest of the group (then its pending updates are gathered), and
  // each 32-column sub-block but the first one reached is refitted once per row.
  {
    const int64_t small_rows = 64, k_cols = 512;
    std::vector<float> xk = llm_activations(tokens, k_cols, 3, rng);
    const std::vector<float> wk = gaussian_weights(small_rows, k_cols, rng);
    HessianAccumulator acck(k_cols);
    acck.add(xk.data(), tokens);
    GptqOptions options;
    options.act_order = true;
    auto result = gptq_quantize(wk.data(), small_rows, k_cols, acck.hessian().data(), QuantTarget::format(DType::Q4_K), options);
    ASSERT_TRUE(result.is_ok()) << result.status().message();
    EXPECT_EQ(result->grid_fits, small_rows * (k_cols / 256));
    EXPECT_EQ(result->sub_block_refits, small_rows * (k_cols / 32 - k_cols / 256));
    const int64_t k_pairs = small_rows * k_cols * (k_cols - 1) / 2;
    // Gathers add at most one multiply-add per pending error for each column of each row they
    // bring up to date, once for the group fit and once for the sub-block refit.
    EXPECT_LE(result->error_update_multiply_adds, k_pairs + 2 * small_rows * k_cols * options.block_size);
    EXPECT_GE(result->error_update_multiply_adds, k_pairs * 9 / 10);
  }
}

}  // namespace
}  // namespace frugal::compress
