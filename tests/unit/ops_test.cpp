// Element-wise and attention ops against their textbook definitions (RMSNorm, RoPE, softmax
// attention over a strided cache), and every ISA's ops against the scalar twins.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/ops_kernels.h"
#include "kernels/vector_math.h"
#include "support/isa_scope.h"
#include "tensor/fp16.h"

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

namespace frugal {
namespace {

using testing::ScopedIsa;
using testing::supported_isas;

std::vector<float> normal_values(int64_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> out(n);
  for (auto& x : out) x = normal(rng);
  return out;
}

// Attention over float and fp16 caches: key ranges shorter than a vector, crossing the 64-key
// tiles, and single keys; several head sizes; rows strided as in the KV cache. The output is a
// convex combination of value rows, so the float twins may differ by float rounding of the
// scores (relative ~1e-6 of |score|) carried into the weights: 2e-5 absolute for N(0,1) values.
TEST(OpsTwins, AttentionMatchesScalarTwin) {
  std::mt19937 rng(41);
  const std::pair<int64_t, int64_t> ranges[] = {{0, 0}, {0, 6}, {0, 7}, {3, 70}, {0, 63}, {0, 64}, {5, 200}, {100, 100}};
  for (int64_t head_dim : {8, 64, 128, 256, 264}) {  // 264: the twin's accumulators in two slices
    const int64_t stride = 3 * head_dim + 8, positions = 201;
    const std::vector<float> q = normal_values(head_dim, 2.0f, rng);
    const std::vector<float> k = normal_values(positions * stride, 1.0f, rng);
    const std::vector<float> v = normal_values(positions * stride, 1.0f, rng);
    std::vector<uint16_t> k16(k.size()), v16(v.size());
    for (size_t i = 0; i < k.size(); ++i) k16[i] = float_to_fp16(k[i]), v16[i] = float_to_fp16(v[i]);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (auto [first, last] : ranges) {
      std::vector<float> expected(head_dim), expected16(head_dim);
      kernels::attend_reference(q.data(), k.data(), v.data(), stride, first, last, head_dim, scale, expected.data());
      kernels::attend_reference(q.data(), k16.data(), v16.data(), stride, first, last, head_dim, scale,
                                expected16.data());
      for (Isa isa : supported_isas()) {
        const kernels::OpsTable& ops = kernels::ops_table(isa);
        std::vector<float> out(head_dim, -7.0f), out16(head_dim, -7.0f);
        ops.attend_f32(q.data(), k.data(), v.data(), stride, first, last, head_dim, scale, out.data());
        ops.attend_f16(q.data(), k16.data(), v16.data(), stride, first, last, head_dim, scale, out16.data());
        for (int64_t d = 0; d < head_dim; ++d) {
          ASSERT_NEAR(out[d], expected[d], 2e-5) << isa_name(isa) << " head_dim " << head_dim << " keys " << first
                                                 << ".." << last << " d " << d;
          ASSERT_NEAR(out16[d], expected16[d], 2e-5) << "fp16 " << isa_name(isa) << " head_dim " << head_dim
                                                     << " keys " << first << ".." << last << " d " << d;
        }
      }
    }
  }
}

// Gate values: normal with a wide spread plus the saturating ends of silu/gelu (where e^-x
// overflows or underflows), at lengths around the vector width. Tolerance: the vector exp has
// relative error ~2e-7, the division and products a few ulp; GeGLU's twin loses up to 6e-8 |x|
// to the cancellation in 1 + tanh(u) for negative x. So 2e-6 of |gate * up| (+1e-30).
TEST(OpsTwins, SwigluAndGegluMatchScalarTwins) {
  std::mt19937 rng(43);
  for (int64_t n : {1, 7, 8, 9, 31, 100, 1536}) {
    std::vector<float> gate = normal_values(n, 4.0f, rng);
    const std::vector<float> up = normal_values(n, 1.0f, rng);
    const float extremes[] = {-120.0f, -45.0f, -20.0f, -9.0f, 0.0f, -0.0f, 9.0f, 45.0f, 120.0f};
    for (int64_t i = 0; i < n && i < 9; ++i) gate[(i * 7) % n] = extremes[i];
    for (bool gelu : {false, true}) {
      std::vector<float> expected = gate;
      (gelu ? kernels::geglu_reference : kernels::swiglu_reference)(expected.data(), up.data(), n);
      for (Isa isa : supported_isas()) {
        const kernels::OpsTable& ops = kernels::ops_table(isa);
        std::vector<float> out = gate;
        (gelu ? ops.geglu : ops.swiglu)(out.data(), up.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_NEAR(out[i], expected[i], 2e-6 * std::fabs(gate[i] * up[i]) + 1e-30)
              << (gelu ? "geglu " : "swiglu ") << isa_name(isa) << " n " << n << " gate " << gate[i];
        }
      }
    }
  }
}

// Softmax of logits-like rows up to a vocabulary: relative 1e-6 per probability (vector exp
// ~2e-7, a sum in a different order), plus 1e-30 for terms the vector exp flushes to 0 below
// e^-87 where std::exp still gives a denormal.
TEST(OpsTwins, SoftmaxMatchesScalarTwin) {
  std::mt19937 rng(47);
  for (int64_t n : {1, 5, 8, 13, 64, 1000, 49152}) {
    const std::vector<float> x = normal_values(n, 8.0f, rng);
    std::vector<float> expected = x;
    kernels::softmax_reference(expected.data(), n);
    for (Isa isa : supported_isas()) {
      std::vector<float> out = x;
      kernels::ops_table(isa).softmax(out.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(out[i], expected[i], 1e-6 * expected[i] + 1e-30) << isa_name(isa) << " n " << n << " i " << i;
        total += out[i];
      }
      EXPECT_NEAR(total, 1.0, 1e-5) << isa_name(isa) << " n " << n;
    }
  }
}

// RMSNorm, out of place and in place (the q/k norms run in place): both sum squares in double,
// so the scale agrees to float rounding; 1e-6 relative.
TEST(OpsTwins, RmsNormMatchesScalarTwin) {
  std::mt19937 rng(53);
  for (int64_t n : {1, 7, 64, 576, 2048}) {
    const std::vector<float> x = normal_values(n, 3.0f, rng), w = normal_values(n, 1.0f, rng);
    std::vector<float> expected(n);
    kernels::rms_norm_reference(x.data(), w.data(), 1e-6f, n, expected.data());
    for (Isa isa : supported_isas()) {
      const kernels::OpsTable& ops = kernels::ops_table(isa);
      std::vector<float> out(n), in_place = x;
      ops.rms_norm(x.data(), w.data(), 1e-6f, n, out.data());
      ops.rms_norm(in_place.data(), w.data(), 1e-6f, n, in_place.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(out[i], expected[i], 1e-6 * std::fabs(expected[i]) + 1e-30) << isa_name(isa) << " n " << n;
        ASSERT_EQ(in_place[i], out[i]) << isa_name(isa) << " n " << n;
      }
    }
  }
}

// The public functions of ops.h run the active ISA's table: FRUGAL_ISA=scalar (here
// set_active_isa) gives exactly the scalar twins' results.
TEST(OpsTwins, PublicOpsDispatchOnActiveIsa) {
  std::mt19937 rng(59);
  const int64_t head_dim = 64, n = 77;
  const std::vector<float> q = normal_values(head_dim, 2.0f, rng), k = normal_values(n * head_dim, 1.0f, rng),
                           v = normal_values(n * head_dim, 1.0f, rng), up = normal_values(n, 1.0f, rng);
  for (Isa isa : supported_isas()) {
    ScopedIsa scoped(isa);
    const kernels::OpsTable& ops = kernels::ops_table(isa);
    std::vector<float> a(head_dim), b(head_dim);
    attend_one_head(q.data(), k.data(), v.data(), head_dim, 0, n - 1, head_dim, 0.125f, a.data());
    ops.attend_f32(q.data(), k.data(), v.data(), head_dim, 0, n - 1, head_dim, 0.125f, b.data());
    EXPECT_EQ(a, b) << isa_name(isa);
    std::vector<float> g1 = k, g2 = k;
    swiglu(g1.data(), up.data(), n);
    ops.swiglu(g2.data(), up.data(), n);
    EXPECT_EQ(g1, g2) << isa_name(isa);
    g1 = k, g2 = k;
    geglu(g1.data(), up.data(), n);
    ops.geglu(g2.data(), up.data(), n);
    EXPECT_EQ(g1, g2) << isa_name(isa);
    g1 = k, g2 = k;
    softmax(g1.data(), n);
    ops.softmax(g2.data(), n);
    EXPECT_EQ(g1, g2) << isa_name(isa);
  }
  ScopedIsa scalar(Isa::kScalar);
  EXPECT_EQ(kernels::ops_table(active_isa()).softmax, &kernels::softmax_reference);
}

}  // namespace
}  // namespace frugal
