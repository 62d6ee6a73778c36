// Unit tests of speculative sampling's rejection rule (runtime/speculative.h): the emitted tokens
// follow the target's distribution p, not the draft's q, on a small vocabulary.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "frugal/frugal.h"

namespace frugal {
namespace {

double total_variation(const std::vector<double>& counts, double n, const std::vector<double>& p) {
  double tv = 0;
  for (size_t i = 0; i < p.size(); ++i) tv += std::fabs(counts[i] / n - p[i]);
  return tv / 2;
}

TEST(SpeculativeSampling, OutputFollowsTheTargetDistribution) {
  SamplerOptions o;
  o.temperature = 0.9f;
  o.top_k = 5;
  o.top_p = 0.97f;
  o.min_p = 0.02f;
  const std::vector<float> p0_logits = {2.0f, 1.5f, 0.2f, -1.0f, 0.9f, -3.0f};
  const std::vector<float> p1_logits = {-0.5f, 0.1f, 1.8f, 1.2f, 0.0f, 0.3f};
  const std::vector<float> p2_logits = {0.0f, 0.0f, 0.5f, 1.0f, 1.5f, 2.0f};
  const std::vector<float> q_logits = {0.5f, 2.2f, 0.8f, 0.6f, -0.5f, 1.0f};  // a poor draft
  std::vector<std::vector<double>> p(3), q(2);
  sampling_distribution(p0_logits.data(), 6, o, p[0]);
  sampling_distribution(p1_logits.data(), 6, o, p[1]);
  sampling_distribution(p2_logits.data(), 6, o, p[2]);
  sampling_distribution(q_logits.data(), 6, o, q[0]);
  q[1] = q[0];
  double sum = 0;
  for (double x : p[0]) sum += x;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_EQ(p[0][5], 0.0);  // cut by top-k

  std::mt19937_64 rng(42);
  std::vector<double> first(6, 0.0), second(6, 0.0);
  double n_second = 0;
  std::vector<double> tv_first;
  const int checkpoints[] = {1000, 10000, 100000};
  int done = 0;
  for (int limit : checkpoints) {
    for (; done < limit; ++done) {
      int32_t drafts[2];
      for (int i = 0; i < 2; ++i) drafts[i] = std::discrete_distribution<int32_t>(q[i].begin(), q[i].end())(rng);
      const auto out = speculative_sample(p, q, drafts, rng);
      ASSERT_GE(out.size(), 1u);
      ASSERT_LE(out.size(), 3u);
      first[out[0]] += 1;
      if (out.size() >= 2) {
        second[out[1]] += 1;
        n_second += 1;
      }
    }
    tv_first.push_back(total_variation(first, done, p[0]));
  }
  // The distance to p shrinks with samples (~ 1/sqrt(n)) ...
  EXPECT_LT(tv_first[2], tv_first[0]);
  EXPECT_LT(tv_first[2], 0.01);
  // ... and is far below the distance to the draft's q or to p perturbed by 5% towards q.
  std::vector<double> perturbed(6);
  for (int i = 0; i < 6; ++i) perturbed[i] = 0.95 * p[0][i] + 0.05 * q[0][i];
  EXPECT_GT(total_variation(first, done, q[0]), 10 * tv_first[2]);
  EXPECT_GT(total_variation(first, done, perturbed), 2 * tv_first[2]);
  // The second token (emitted when the first draft was accepted) follows p[1].
  ASSERT_GT(n_second, 10000);
  EXPECT_LT(total_variation(second, n_second, p[1]), 0.015);
}

TEST(SpeculativeSampling, DistributionIsTheSamplers) {
  // p and q must come from the same samplers the plain path uses: Sampler's draws follow it.
  SamplerOptions o;
  o.temperature = 0.7f;
  o.top_k = 4;
  o.top_p = 0.9f;
  o.min_p = 0.05f;
  o.seed = 3;
  const std::vector<float> logits = {2.0f, 1.5f, 0.2f, -1.0f, 0.9f, -3.0f};
  std::vector<double> p;
  sampling_distribution(logits.data(), 6, o, p);
  Sampler sampler(o, 6);
  std::vector<double> counts(6, 0.0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) counts[sampler.sample(logits.data())] += 1;
  EXPECT_LT(total_variation(counts, n, p), 0.01);
}

TEST(SpeculativeSampling, IdenticalDraftIsAlwaysAccepted) {
  SamplerOptions o;
  o.temperature = 1.0f;
  const std::vector<float> logits = {1.0f, 0.5f, -0.5f, 2.0f};
  std::vector<std::vector<double>> p(2), q(1);
  sampling_distribution(logits.data(), 4, o, p[0]);
  p[1] = p[0];
  q[0] = p[0];
  std::mt19937_64 rng(1);
  for (int t = 0; t < 200; ++t) {
    const int32_t d = std::discrete_distribution<int32_t>(q[0].begin(), q[0].end())(rng);
    const auto out = speculative_sample(p, q, std::span<const int32_t>(&d, 1), rng);
    ASSERT_EQ(out.size(), 2u);  // accepted + bonus
    EXPECT_EQ(out[0], d);
  }
}

}  // namespace
}  // namespace frugal
