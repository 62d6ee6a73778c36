// Unit tests of adaptive speculation's cost model (runtime/speculative.h): the draft length that
// maximises expected tokens per unit time (Leviathan et al. 2023, eq. 1), switch-off when no length
// beats plain decoding, and the online estimates of costs and acceptance.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "frugal/frugal.h"

namespace frugal {
namespace {

// V(n) = 1 + slope (n - 1) for n = 1..k_max+1, indexed by k = n - 1.
std::vector<double> linear_verify(double slope, int k_max) {
  std::vector<double> v;
  for (int k = 0; k <= k_max; ++k) v.push_back(1.0 + slope * k);
  return v;
}

TEST(SpeculationCostModel, ExpectedTokensFollowLeviathanEquationOne) {
  EXPECT_DOUBLE_EQ(expected_tokens_per_step(0.0, 5), 1.0);
  EXPECT_DOUBLE_EQ(expected_tokens_per_step(1.0, 5), 6.0);
  EXPECT_DOUBLE_EQ(expected_tokens_per_step(0.5, 1), 1.5);
  EXPECT_DOUBLE_EQ(expected_tokens_per_step(0.5, 2), 1.75);
  EXPECT_NEAR(expected_tokens_per_step(0.8, 4), (1 - std::pow(0.8, 5)) / 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(expected_tokens_per_step(0.7, 0), 1.0);
}

TEST(SpeculationCostModel, HandWorkedDecisions) {
  // Free drafts, V(n) = 1 + 0.25 (n - 1), a = 0.5: S(1) = 1.5 / 1.25 = 1.2, S(2) = 1.75 / 1.5 = 1.17,
  // S(3) = 1.875 / 1.75 = 1.07: k = 1 at 1.2.
  double s = 0;
  EXPECT_EQ(best_draft_length(0.5, 0.0, linear_verify(0.25, 8), 8, 1.0, &s), 1);
  EXPECT_NEAR(s, 1.2, 1e-12);
  // The same with a slope of 0.5: S(1) = 1.5 / 1.5 = 1 exactly and every longer draft is worse:
  // nothing beats plain decoding, speculation off.
  EXPECT_EQ(best_draft_length(0.5, 0.0, linear_verify(0.5, 8), 8, 1.0, &s), 0);
  EXPECT_DOUBLE_EQ(s, 1.0);
  // Nothing is ever accepted: off, whatever the costs.
  EXPECT_EQ(best_draft_length(0.0, 0.0, linear_verify(0.0, 8), 8), 0);
  EXPECT_EQ(best_draft_length(0.0, 0.01, linear_verify(0.05, 8), 8), 0);
  // A bandwidth-bound target (V = 1) and free, always-right drafts: the longest draft.
  EXPECT_EQ(best_draft_length(1.0, 0.0, linear_verify(0.0, 8), 8, 1.0, &s), 8);
  EXPECT_DOUBLE_EQ(s, 9.0);
  // A draft as expensive as 0.9 plain steps per token with a = 0.8 and V = 1: S(k) < 1 for every k.
  EXPECT_EQ(best_draft_length(0.8, 0.9, linear_verify(0.0, 8), 8), 0);
  // The classic case: a 10x cheaper draft (c = 0.1) on a bandwidth-bound target, a = 0.7:
  // S(k) = (1 - 0.7^(k+1)) / 0.3 / (1 + 0.1 k): 1.545, 1.825, 1.949, 1.992, 1.985 -> k = 4.
  EXPECT_EQ(best_draft_length(0.7, 0.1, linear_verify(0.0, 8), 8, 1.0, &s), 4);
  EXPECT_NEAR(s, (1 - std::pow(0.7, 5)) / 0.3 / 1.4, 1e-12);
}

TEST(SpeculationCostModel, MinimumGainAndLimits) {
  // S(1) = 1.2 above: off when 1.25 is required, on at 1.1.
  EXPECT_EQ(best_draft_length(0.5, 0.0, linear_verify(0.25, 8), 8, 1.25), 0);
  EXPECT_EQ(best_draft_length(0.5, 0.0, linear_verify(0.25, 8), 8, 1.1), 1);
  // k never exceeds k_max nor the verification costs given.
  EXPECT_EQ(best_draft_length(1.0, 0.0, linear_verify(0.0, 8), 3), 3);
  EXPECT_EQ(best_draft_length(1.0, 0.0, linear_verify(0.0, 2), 8), 2);
  EXPECT_EQ(best_draft_length(0.9, 0.0, linear_verify(0.0, 8), 0), 0);
}

TEST(SpeculationCostModel, ChosenLengthGrowsWithAcceptanceAndShrinksWithCost) {
  for (double slope : {0.0, 0.05, 0.2}) {
    for (double c : {0.0, 0.05, 0.3}) {
      int previous = 0;
      for (double a = 0.0; a <= 0.99; a += 0.01) {
        const int k = best_draft_length(a, c, linear_verify(slope, 16), 16);
        EXPECT_GE(k, previous) << "a " << a << " c " << c << " slope " << slope;
        previous = k;
      }
    }
  }
  for (double a : {0.6, 0.8, 0.95}) {
    int previous = 1 << 30;
    for (double c = 0.0; c <= 1.0; c += 0.02) {
      const int k = best_draft_length(a, c, linear_verify(0.1, 16), 16);
      EXPECT_LE(k, previous) << "a " << a << " c " << c;
      previous = k;
    }
  }
}

TEST(SpeculationCostModel, ADrafterThatRarelyProposesIsOffUnlessFree) {
  // A draft model stopping at its confidence cut-off before its first token: a draft step's cost
  // (c = 0.5) is paid at every step for nothing. At proposal rate 0 no k pays, however good a.
  EXPECT_EQ(best_draft_length(0.9, 0.5, linear_verify(0.0, 8), 8, 1.0, nullptr, 0.0), 0);
  // Free (lookup) and proposing at half the steps with a = 0.9, V = 1: S(k) = (0.5 E + 0.5) / 1,
  // largest at k = 8: (0.5 (1 - 0.9^9) / 0.1 + 0.5).
  double s = 0;
  EXPECT_EQ(best_draft_length(0.9, 0.0, linear_verify(0.0, 8), 8, 1.0, &s, 0.5), 8);
  EXPECT_NEAR(s, 0.5 * (1 - std::pow(0.9, 9)) / 0.1 + 0.5, 1e-12);
  // Hand-worked: c = 0.2, V(n) = 1 + 0.1 (n - 1), a = 0.6, proposal rate 0.5:
  // k = 1: (0.5 * 1.6 + 0.5) / (0.5 (0.2 + 1.1) + 0.5 * 1.2) = 1.3 / 1.25 = 1.04;
  // k = 2: (0.5 * 1.96 + 0.5) / (0.5 (0.4 + 1.2) + 0.6) = 1.48 / 1.4 = 1.057;
  // k = 3: (0.5 * 2.176 + 0.5) / (0.5 (0.6 + 1.3) + 0.6) = 1.588 / 1.55 = 1.025: k = 2.
  EXPECT_EQ(best_draft_length(0.6, 0.2, linear_verify(0.1, 8), 8, 1.0, &s, 0.5), 2);
  EXPECT_NEAR(s, 1.48 / 1.4, 1e-12);
  // With min_gain 1.06 it is off.
  EXPECT_EQ(best_draft_length(0.6, 0.2, linear_verify(0.1, 8), 8, 1.06, nullptr, 0.5), 0);
  // A drafter as expensive as the target (c = 1.1 plain steps per token, V(n) = 1 + 0.05 (n - 1))
  // cannot pay at any acceptance: (k + 1) / (1.1 k + 1 + 0.05 k) < 1; c = 0.6 could.
  SpeculationCostModel costly(64), cheaper(64);
  costly.observe_plain(0.010);
  costly.observe_draft(0.011, 1);
  costly.observe_verify(5, 0.012);
  cheaper.observe_plain(0.010);
  cheaper.observe_draft(0.006, 1);
  cheaper.observe_verify(5, 0.012);
  EXPECT_FALSE(costly.could_pay(8));
  EXPECT_TRUE(cheaper.could_pay(8));
  SpeculationCostModel m(64);
  EXPECT_DOUBLE_EQ(m.proposal_rate(), 1.0);
  for (int i = 0; i < 20; ++i) m.observe_proposal(false);
  EXPECT_LT(m.proposal_rate(), 0.2);  // the prior (one proposing call) against ~5 decayed empty ones
}

TEST(SpeculationCostModel, OnlineEstimates) {
  SpeculationCostModel m(64);
  EXPECT_FALSE(m.has_plain());
  EXPECT_DOUBLE_EQ(m.acceptance(), 0.5);  // the prior
  m.observe_plain(0.010);
  EXPECT_TRUE(m.has_plain());
  // Before any verification: the prior slope.
  EXPECT_NEAR(m.verify_cost(5), 1.0 + 4 * SpeculationCostModel::kPriorSlope, 1e-12);
  m.observe_draft(0.006, 3);  // 2 ms per drafted token = 0.2 plain steps
  EXPECT_NEAR(m.draft_cost(), 0.2, 1e-12);
  m.observe_verify(3, 0.014);  // V(3) = 1.4
  m.observe_verify(5, 0.018);  // V(5) = 1.8: slope 0.2 through (1, 1)
  EXPECT_NEAR(m.verify_cost(3), 1.4, 1e-12);
  EXPECT_NEAR(m.verify_cost(5), 1.8, 1e-12);
  EXPECT_NEAR(m.verify_cost(9), 1.0 + 0.2 * 8, 1e-12);  // the fitted line, unmeasured n
  EXPECT_DOUBLE_EQ(m.verify_cost(1), 1.0);
  // Acceptance: 3 of 4 accepted = 3 successes and 1 failure (trials up to the first rejection),
  // then 2 of 2 = 2 successes, the older counts decayed by kDecay, with the prior 0.5 of weight 1.
  m.observe_acceptance(3, 4);
  m.observe_acceptance(2, 2);
  const double d = SpeculationCostModel::kDecay;
  EXPECT_NEAR(m.acceptance(), (3 * d + 2 + 0.5) / (4 * d + 2 + 1), 1e-12);
  // Many rejections at once: a falls toward 0 and the decision switches off.
  for (int i = 0; i < 30; ++i) m.observe_acceptance(0, 2);
  EXPECT_LT(m.acceptance(), 0.15);
  EXPECT_EQ(m.decide(8), 0);
  // Then a stretch where everything is accepted: back on, with a long draft.
  for (int i = 0; i < 10; ++i) m.observe_acceptance(4, 4);
  EXPECT_GT(m.acceptance(), 0.85);
  double s = 0;
  const int k = m.decide(8, &s);
  EXPECT_GE(k, 3);
  EXPECT_GT(s, SpeculationCostModel::kMinGain);
  // The decision is best_draft_length over the estimates.
  std::vector<double> v;
  for (int i = 0; i <= 8; ++i) v.push_back(m.verify_cost(i + 1));
  EXPECT_EQ(k, best_draft_length(m.acceptance(), m.draft_cost(), v, 8, SpeculationCostModel::kMinGain));
}

TEST(SpeculationCostModel, ExpensiveVerificationSwitchesOffWhatAFreeOneKeeps) {
  // The same low acceptance (~0.2) and a free drafter (lookup): on a bandwidth-bound target
  // (V(n) ~ 1) speculation pays; on a compute-bound one where each extra row costs 0.6 of a step
  // it does not, and the cost model switches it off.
  SpeculationCostModel bound(64), compute(64);
  for (SpeculationCostModel* m : {&bound, &compute}) {
    m->observe_plain(0.010);
    m->observe_draft(1e-7, 3);
    for (int i = 0; i < 20; ++i) {
      m->observe_acceptance(i % 2 == 0 ? 1 : 0, 3);  // 1 success, 2 failures per two steps
      m->observe_acceptance(0, 3);
    }
  }
  bound.observe_verify(4, 0.0102);
  compute.observe_verify(4, 0.028);
  EXPECT_GT(bound.decide(8), 0);
  EXPECT_EQ(compute.decide(8), 0);
}

TEST(SpeculationCostModel, AStalledFirstVerificationDoesNotSwitchAGoodDrafterOff) {
  // A free drafter (lookup) at acceptance ~0.75 whose first V(2) measured 5.1 plain steps (the
  // process was descheduled): the sample is capped near the prediction and speculation stays on.
  SpeculationCostModel m(64);
  m.observe_plain(0.010);
  m.observe_draft(1e-7, 1);
  for (int i = 0; i < 4; ++i) m.observe_acceptance(3, 4);
  m.observe_verify(2, 0.051);
  EXPECT_NEAR(m.verify_cost(2), SpeculationCostModel::kFirstSampleCap * (1 + SpeculationCostModel::kPriorSlope), 1e-12);
  EXPECT_GT(m.decide(8), 0);
  // A verification that really costs more than predicted is believed within a few samples.
  for (int i = 0; i < 6; ++i) m.observe_verify(2, 0.019);
  EXPECT_NEAR(m.verify_cost(2), 1.9, 0.05);
  // A first sample below the cap is taken as is.
  SpeculationCostModel fresh(64);
  fresh.observe_plain(0.010);
  fresh.observe_verify(3, 0.013);
  EXPECT_NEAR(fresh.verify_cost(3), 1.3, 1e-12);
}

}  // namespace
}  // namespace frugal
