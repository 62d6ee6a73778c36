// Unit tests of the matrix pruners (compress/prune.h): masks have exactly the asked sparsity and
// pattern, Wanda and SparseGPT reconstruct a layer's output better than magnitude on synthetic
// LLM-like activations, SparseGPT at sparsity 0 is the identity, joint pruning + quantization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "compress/gptq.h"
#include "compress/prune.h"
#include "support/synthetic_data.h"

namespace frugal::compress {
namespace {

// Per-row zero counts of W.
std::vector<int64_t> zeros_by_row(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<int64_t> z(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) z[static_cast<size_t>(r)] += w[static_cast<size_t>(r * cols + j)] == 0.0f;
  }
  return z;
}

// Every group of m consecutive weights in each row has exactly n zeros.
void expect_n_m(const std::vector<float>& w, int64_t rows, int64_t cols, int n, int m) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols; g += m) {
      int zeros = 0;
      for (int j = 0; j < m; ++j) zeros += w[static_cast<size_t>(r * cols + g + j)] == 0.0f;
      ASSERT_EQ(zeros, n) << "row " << r << " group " << g;
    }
  }
}

// ‖X Wᵀ − X W'ᵀ‖² / ‖X Wᵀ‖² over the tokens of X.
double relative_output_error(const std::vector<float>& x, int64_t tokens, const std::vector<float>& w, const std::vector<float>& pruned,
                             int64_t rows, int64_t cols) {
  double err = 0.0, ref = 0.0;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double a = 0.0, b = 0.0;
      for (int64_t j = 0; j < cols; ++j) {
        a += static_cast<double>(x[static_cast<size_t>(t * cols + j)]) * w[static_cast<size_t>(r * cols + j)];
        b += static_cast<double>(x[static_cast<size_t>(t * cols + j)]) * pruned[static_cast<size_t>(r * cols + j)];
      }
      err += (a - b) * (a - b);
      ref += a * a;
    }
  }
  return err / ref;
}

GptqHessian prepare(const std::vector<float>& x, int64_t tokens, int64_t cols) {
  HessianAccumulator accumulator(cols);
  accumulator.add(x.data(), tokens);
  const std::vector<double> h = accumulator.hessian();
  auto prepared = gptq_prepare(h.data(), cols);
  EXPECT_TRUE(prepared.is_ok());
  return std::move(prepared.value());
}

TEST(SparsityPattern, ParsesAndRefuses) {
  auto unstructured = SparsityPattern::parse("unstructured");
  ASSERT_TRUE(unstructured.is_ok());
  EXPECT_FALSE(unstructured->is_n_m());
  auto two_four = SparsityPattern::parse("2:4");
  ASSERT_TRUE(two_four.is_ok());
  EXPECT_EQ(two_four->n, 2);
  EXPECT_EQ(two_four->m, 4);
  EXPECT_DOUBLE_EQ(two_four->sparsity(), 0.5);
  EXPECT_EQ(two_four->name(), "2:4");
  for (const char* bad : {"4:4", "0:4", "5:4", "2:", ":4", "a:b", "2:4:8", "1:100", "dense"}) {
    EXPECT_FALSE(SparsityPattern::parse(bad).is_ok()) << bad;
  }
  EXPECT_FALSE(check_sparsity(1.0, {}).is_ok());
  EXPECT_FALSE(check_sparsity(-0.1, {}).is_ok());
  EXPECT_FALSE(check_sparsity(0.3, *two_four).is_ok());
  EXPECT_DOUBLE_EQ(check_sparsity(-1.0, *two_four).value(), 0.5);
  EXPECT_DOUBLE_EQ(check_sparsity(0.7, {}).value(), 0.7);
}

TEST(PruneByScore, ExactSparsityPerRowAndPattern) {
  std::mt19937 rng(11);
  const int64_t rows = 24, cols = 96;
  const std::vector<float> w = testing::gaussian_weights(rows, cols, rng);
  std::vector<float> scale(static_cast<size_t>(cols));
  for (float& s : scale) s = 0.1f + static_cast<float>(rng() % 1000) / 100.0f;
  for (const float* column_scale : {static_cast<const float*>(nullptr), static_cast<const float*>(scale.data())}) {
    for (double s : {0.0, 0.25, 0.5, 0.7}) {
      std::vector<float> p = w;
      const int64_t zeroed = prune_by_score(p.data(), rows, cols, column_scale, s, {});
      const int64_t per_row = std::llround(s * cols);
      EXPECT_EQ(zeroed, per_row * rows);
      for (int64_t z : zeros_by_row(p, rows, cols)) ASSERT_EQ(z, per_row) << s;
      // The zeroed weights are the lowest-scoring ones of their row.
      for (int64_t r = 0; r < rows && per_row > 0; ++r) {
        float max_pruned = 0.0f, min_kept = 1e30f;
        for (int64_t j = 0; j < cols; ++j) {
          const float v = std::fabs(w[static_cast<size_t>(r * cols + j)]) * (column_scale ? column_scale[j] : 1.0f);
          if (p[static_cast<size_t>(r * cols + j)] == 0.0f) max_pruned = std::max(max_pruned, v);
          else min_kept = std::min(min_kept, v);
        }
        EXPECT_LE(max_pruned, min_kept);
      }
    }
    for (const auto& [n, m] : {std::pair{2, 4}, std::pair{4, 8}, std::pair{1, 4}}) {
      std::vector<float> p = w;
      EXPECT_EQ(prune_by_score(p.data(), rows, cols, column_scale, 0.0, SparsityPattern{n, m}), rows * cols / m * n);
      expect_n_m(p, rows, cols, n, m);
    }
  }
}

struct Layer {
  int64_t tokens = 512, rows = 48, cols = 128;
  std::vector<float> x, w;
  explicit Layer(uint32_t seed, int outliers = 4) {
    std::mt19937 rng(seed);
    x = testing::llm_activations(tokens, cols, outliers, rng);
    w = testing::gaussian_weights(rows, cols, rng);
  }
};

TEST(SparseGpt, SparsityZeroIsTheIdentity) {
  const Layer l(5);
  const GptqHessian h = prepare(l.x, l.tokens, l.cols);
  std::vector<float> p = l.w;
  auto r = sparsegpt_prune(p.data(), l.rows, l.cols, h, 0.0, {});
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->zeros, 0);
  for (size_t i = 0; i < p.size(); ++i) ASSERT_EQ(p[i], l.w[i]);
}

TEST(SparseGpt, MasksHaveTheAskedSparsityAndPattern) {
  const Layer l(6);
  const GptqHessian h = prepare(l.x, l.tokens, l.cols);
  for (double s : {0.3, 0.5, 0.8}) {
    std::vector<float> p = l.w;
    SparseGptOptions o;
    o.block_size = 32;  // four blocks of 48 x 32: round(s * 1536) zeros in each
    auto r = sparsegpt_prune(p.data(), l.rows, l.cols, h, s, {}, o);
    ASSERT_TRUE(r.is_ok());
    const int64_t per_block = std::llround(s * l.rows * 32);
    EXPECT_EQ(r->zeros, 4 * per_block);
    int64_t zeros = 0;
    for (float v : p) zeros += v == 0.0f;
    EXPECT_EQ(zeros, 4 * per_block);
  }
  for (const auto& [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
    std::vector<float> p = l.w;
    ASSERT_TRUE(sparsegpt_prune(p.data(), l.rows, l.cols, h, 0.0, SparsityPattern{n, m}).is_ok());
    expect_n_m(p, l.rows, l.cols, n, m);
  }
  std::vector<float> p = l.w;
  EXPECT_FALSE(sparsegpt_prune(p.data(), l.rows, l.cols, h, 1.0, {}).is_ok());
  EXPECT_FALSE(sparsegpt_prune(p.data(), l.rows, l.cols, h, 0.3, SparsityPattern{2, 4}).is_ok());
  EXPECT_FALSE(sparsegpt_prune(p.data(), l.rows, 127, h, 0.5, {}).is_ok());  // Hessian of another width
}

// On activations with correlated channels (and outliers), using them beats |W| alone: Wanda by
// weighting columns, SparseGPT also by updating the remaining weights. With outlier channels 30x
// larger the output error is dominated by them and both keep them; without outliers SparseGPT's
// update also beats Wanda (the paper's ordering).
TEST(Pruners, WandaAndSparseGptReconstructBetterThanMagnitude) {
  for (int outliers : {0, 4}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      const Layer l(seed, outliers);
      const GptqHessian h = prepare(l.x, l.tokens, l.cols);
      const std::vector<float> norms = column_norms(l.x.data(), l.tokens, l.cols);
      for (const SparsityPattern& pattern : {SparsityPattern{}, SparsityPattern{2, 4}, SparsityPattern{4, 8}}) {
        const double s = pattern.is_n_m() ? pattern.sparsity() : 0.5;
        std::vector<float> magnitude = l.w, wanda = l.w, sparsegpt = l.w;
        prune_by_score(magnitude.data(), l.rows, l.cols, nullptr, s, pattern);
        prune_by_score(wanda.data(), l.rows, l.cols, norms.data(), s, pattern);
        ASSERT_TRUE(sparsegpt_prune(sparsegpt.data(), l.rows, l.cols, h, s, pattern).is_ok());
        const double e_mag = relative_output_error(l.x, l.tokens, l.w, magnitude, l.rows, l.cols);
        const double e_wanda = relative_output_error(l.x, l.tokens, l.w, wanda, l.rows, l.cols);
        const double e_sgpt = relative_output_error(l.x, l.tokens, l.w, sparsegpt, l.rows, l.cols);
        const std::string where = "seed " + std::to_string(seed) + ", " + std::to_string(outliers) + " outliers, " + pattern.name();
        EXPECT_LT(e_wanda, 0.8 * e_mag) << where;
        EXPECT_LT(e_sgpt, 0.8 * e_mag) << where;
        if (outliers == 0) {
          EXPECT_LT(e_sgpt, 0.8 * e_wanda) << where;
        }
      }
    }
  }
}

TEST(SparseGpt, JointPruningAndQuantization) {
  const Layer l(8);
  const GptqHessian h = prepare(l.x, l.tokens, l.cols);
  const QuantTarget target = QuantTarget::format(DType::Q4_0);  // symmetric: 0 is exact
  for (const SparsityPattern& pattern : {SparsityPattern{}, SparsityPattern{2, 4}}) {
    GptqOptions o;
    o.sparsity = 0.5;
    o.sparsity_n = pattern.n;
    o.sparsity_m = pattern.m;
    auto joint = gptq_quantize(l.w.data(), l.rows, l.cols, h, target, o);
    ASSERT_TRUE(joint.is_ok()) << joint.status().message();
    const std::vector<float>& v = joint->quantized.values;
    int64_t zeros = 0;
    for (float x : v) zeros += x == 0.0f;
    EXPECT_GE(zeros, l.rows * l.cols / 2);
    if (pattern.is_n_m()) {
      for (int64_t r = 0; r < l.rows; ++r) {
        for (int64_t g = 0; g < l.cols; g += 4) {
          int z = 0;
          for (int j = 0; j < 4; ++j) z += v[static_cast<size_t>(r * l.cols + g + j)] == 0.0f;
          ASSERT_GE(z, 2);
        }
      }
    }
    // One sweep beats pruning first and rounding the survivors afterwards.
    std::vector<float> pruned = l.w;
    ASSERT_TRUE(sparsegpt_prune(pruned.data(), l.rows, l.cols, h, 0.5, pattern).is_ok());
    const QuantizedMatrix rtn = quantize_matrix(target, pruned.data(), l.rows, l.cols, nullptr, GridFit::kMinMax);
    EXPECT_LT(relative_output_error(l.x, l.tokens, l.w, v, l.rows, l.cols),
              relative_output_error(l.x, l.tokens, l.w, rtn.values, l.rows, l.cols))
        << pattern.name();
  }
  GptqOptions act_order;
  act_order.act_order = true;
  act_order.sparsity = 0.5;
  EXPECT_FALSE(gptq_quantize(l.w.data(), l.rows, l.cols, h, target, act_order).is_ok());
}

}  // namespace
}  // namespace frugal::compress
