// Element-wise and attention ops against their textbook definitions (RMSNorm, RoPE, softmax
// attention over a strided cache).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/vector_math.h"

namespace frugal {
namespace {

TEST(Ops, AttentionMatchesExplicitSoftmax) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int64_t head_dim = 16, positions = 150, stride = 32;
  std::vector<float> q(head_dim), k(positions * stride), v(positions * stride), out(head_dim);
  for (auto& x : q) x = normal(rng) * 2;
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  attend_one_head(q.data(), k.data(), v.data(), stride, 3, positions - 1, head_dim, 0.25f, out.data());
  std::vector<float> scores;
  for (int64_t j = 3; j < positions; ++j) {
    float s = 0;
    for (int64_t d = 0; d < head_dim; ++d) s += q[d] * k[j * stride + d];
    scores.push_back(s * 0.25f);
  }
  softmax(scores.data(), static_cast<int64_t>(scores.size()));
  for (int64_t d = 0; d < head_dim; ++d) {
    double expected = 0;
    for (size_t j = 0; j < scores.size(); ++j) expected += scores[j] * v[(j + 3) * stride + d];
    EXPECT_NEAR(out[d], expected, 1e-5);
  }
}

TEST(Ops, RmsNormAndRope) {
  const float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f};
  float y[4];
  rms_norm(x, w, 0, 4, y);
  const float rms = std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  EXPECT_NEAR(y[2], 3 / rms * 2, 1e-6);
  // Rotating (1, 0) by position * inv_freq keeps the length and gives (cos, sin).
  float head[4] = {1, 0, 0, 1};
  const float inv_freq[2] = {0.5f, 0.25f};
  rope(head, 1, 4, 4, 3, inv_freq, RopeStyle::kNormal);
  EXPECT_NEAR(head[0], std::cos(1.5f), 1e-6);
  EXPECT_NEAR(head[1], std::sin(1.5f), 1e-6);
  EXPECT_NEAR(head[2], -std::sin(0.75f), 1e-6);
  EXPECT_NEAR(head[3], std::cos(0.75f), 1e-6);
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

TEST(VectorMath, Exp8MatchesStdExp) {
  // Relative error bound 1e-6 across the float range the softmax and SiLU feed it, plus the
  // edge cases: -inf and very negative inputs give 0, large inputs +inf.
  float worst = 0;
  for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
    alignas(32) float in[8], out[8];
    for (int i = 0; i < 8; ++i) in[i] = x + i * 0.001f;
    _mm256_store_ps(out, exp8(_mm256_load_ps(in)));
    for (int i = 0; i < 8; ++i) {
      const double expected = std::exp(static_cast<double>(in[i]));
      worst = std::max(worst, static_cast<float>(std::fabs(out[i] - expected) / expected));
    }
  }
  EXPECT_LT(worst, 1e-6f);
  alignas(32) float edge[8] = {-std::numeric_limits<float>::infinity(), -100.0f, -88.0f, 0.0f, 1.0f, 89.0f, 1000.0f, -0.0f}, out[8];
  _mm256_store_ps(out, exp8(_mm256_load_ps(edge)));
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 1.0f);
  EXPECT_NEAR(out[4], 2.718281828f, 1e-6f);
  EXPECT_TRUE(std::isinf(out[5]));
  EXPECT_TRUE(std::isinf(out[6]));
  EXPECT_EQ(out[7], 1.0f);
}

TEST(Ops, SwigluMatchesFormula) {
  std::vector<float> gate(37), up(37), expected(37);
  for (int i = 0; i < 37; ++i) {
    gate[i] = (i - 18) * 0.7f;
    up[i] = 1.0f + i * 0.1f;
    expected[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
  swiglu(gate.data(), up.data(), 37);
  for (int i = 0; i < 37; ++i) EXPECT_NEAR(gate[i], expected[i], 1e-5f * (1 + std::fabs(expected[i])));
}

}  // namespace
}  // namespace frugal
