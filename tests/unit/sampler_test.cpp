// Sampler behaviour: greedy, truncations (top-k, top-p, min-p), temperature, penalty, seeding.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "runtime/sampler.h"

namespace frugal {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};

std::set<int32_t> support(SamplerOptions o, int draws = 2000) {
  std::set<int32_t> seen;
  Sampler s(o, static_cast<int32_t>(kLogits.size()));
  for (int i = 0; i < draws; ++i) seen.insert(s.sample(kLogits.data()));
  return seen;
}

TEST(Sampler, GreedyPicksTheArgmax) {
  SamplerOptions o;
  o.temperature = 0;
  Sampler s(o, 6);
  EXPECT_EQ(s.sample(kLogits.data()), 1);
}

// Ties go to the first largest logit, with and without a repetition penalty (the penalty path
// fills the candidate list; the plain greedy path scans the logits directly).
TEST(Sampler, GreedyTiesGoToTheFirstLargest) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  SamplerOptions o;
  o.temperature = 0;
  Sampler plain(o, static_cast<int32_t>(logits.size()));
  EXPECT_EQ(plain.sample(logits.data()), 1);
  o.repeat_penalty = 1.5f;
  Sampler penalized(o, static_cast<int32_t>(logits.size()));
  EXPECT_EQ(penalized.sample(logits.data()), 1);
  penalized.accept(1);  // token 1 divided by 1.5: token 3 is now the largest
  EXPECT_EQ(penalized.sample(logits.data()), 3);
}

// The greedy scan over many logits (the vectorizable path) agrees with max_element, ties and
// NaNs included: a NaN is never chosen unless it is logits[0] (max_element keeps index 0 then).
TEST(Sampler, GreedyScanMatchesMaxElement) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> pick(-3, 3);
  SamplerOptions o;
  o.temperature = 0;
  for (int n : {1, 7, 8, 9, 100, 1001}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> logits(n);
      for (float& x : logits) x = static_cast<float>(pick(rng));  // many ties
      if (trial % 4 == 1) logits[rng() % n] = std::nanf("");
      if (trial % 4 == 2) logits[0] = std::nanf("");
      size_t expected = 0;
      for (size_t i = 1; i < logits.size(); ++i) {
        if (logits[expected] < logits[i]) expected = i;
      }
      Sampler s(o, n);
      EXPECT_EQ(s.sample(logits.data()), static_cast<int32_t>(expected)) << "n " << n << " trial " << trial;
    }
  }
}

TEST(Sampler, TopKKeepsTheKBest) {
  SamplerOptions o;
  o.top_k = 2;
  o.top_p = 1;
  o.min_p = 0;
  o.temperature = 1;
  EXPECT_EQ(support(o), (std::set<int32_t>{1, 5}));
  o.top_k = 1;
  EXPECT_EQ(support(o), (std::set<int32_t>{1}));
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplerOptions o;
  o.top_k = 0;
  o.min_p = 0;
  o.temperature = 1;
  // softmax of kLogits: p(1)≈0.35, p(5)≈0.32, p(2)≈0.21 — 0.6 needs the first two.
  o.top_p = 0.6f;
  EXPECT_EQ(support(o), (std::set<int32_t>{1, 5}));
  o.top_p = 0.8f;
  EXPECT_EQ(support(o), (std::set<int32_t>{1, 5, 2}));
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplerOptions o;
  o.top_k = 0;
  o.top_p = 1;
  o.temperature = 1;
  o.min_p = 0.5f;  // keeps tokens with p >= 0.5 * p(best): logits >= 3 - ln 2
  EXPECT_EQ(support(o), (std::set<int32_t>{1, 5, 2}));
  o.min_p = 0.0f;
  EXPECT_EQ(support(o, 20000).size(), 6u);
}

TEST(Sampler, LowTemperatureConcentratesOnTheArgmax) {
  SamplerOptions o;
  o.top_k = 0;
  o.top_p = 1;
  o.min_p = 0;
  o.temperature = 0.05f;
  Sampler s(o, 6);
  int best = 0;
  for (int i = 0; i < 1000; ++i) best += s.sample(kLogits.data()) == 1;
  EXPECT_GT(best, 850);
}

TEST(Sampler, SameSeedSameSequence) {
  SamplerOptions o;
  o.top_k = 0;
  o.top_p = 1;
  o.min_p = 0;
  o.temperature = 1.5f;
  o.seed = 42;
  Sampler a(o, 6), b(o, 6);
  std::vector<int32_t> xa, xb;
  for (int i = 0; i < 200; ++i) {
    xa.push_back(a.sample(kLogits.data()));
    xb.push_back(b.sample(kLogits.data()));
  }
  EXPECT_EQ(xa, xb);
  o.seed = 43;
  Sampler c(o, 6);
  std::vector<int32_t> xc;
  for (int i = 0; i < 200; ++i) xc.push_back(c.sample(kLogits.data()));
  EXPECT_NE(xa, xc);
}

TEST(Sampler, RepeatPenaltyMovesAwayFromRecentTokens) {
  SamplerOptions o;
  o.temperature = 0;
  o.repeat_penalty = 1.5f;  // 3.0 / 1.5 = 2.0 < 2.9
  Sampler s(o, 6);
  s.accept(1);
  s.accept(1);  // counted once
  EXPECT_EQ(s.sample(kLogits.data()), 5);
  // A negative logit is pushed further down, never up.
  std::vector<float> negative = {-0.5f, -0.6f};
  Sampler n(o, 2);
  n.accept(0);
  EXPECT_EQ(n.sample(negative.data()), 1);
}

}  // namespace
}  // namespace frugal
