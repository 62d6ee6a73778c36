// OWL's layer-wise sparsities: the mean is the target, more outliers get less sparsity, the range
// is target +- lambda, and outlier ratios count scores above M x the mean.
#include <gtest/gtest.h>

#include <numeric>

#include "compress/owl.h"

namespace frugal::compress {
namespace {

double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }

TEST(Owl, MeanIsTheTargetAndOutliersGetLessSparsity) {
  const std::vector<double> ratios = {0.010, 0.004, 0.020, 0.006, 0.012};
  for (double target : {0.5, 0.6, 0.7}) {
    auto s = owl_sparsities(ratios, target, OwlOptions{});
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    EXPECT_NEAR(mean(*s), target, 1e-12);
    // Ordered opposite to the outlier ratios.
    for (size_t a = 0; a < ratios.size(); ++a) {
      for (size_t b = 0; b < ratios.size(); ++b) {
        if (ratios[a] > ratios[b]) {
          EXPECT_LT((*s)[a], (*s)[b]) << a << " vs " << b;
        }
      }
    }
    // The extremes are 2 * lambda apart.
    EXPECT_NEAR((*s)[1] - (*s)[2], 0.16, 1e-12);
  }
}

TEST(Owl, EqualRatiosGiveUniformSparsityAndClampingKeepsTheMean) {
  auto uniform = owl_sparsities({0.01, 0.01, 0.01}, 0.6, OwlOptions{});
  ASSERT_TRUE(uniform.is_ok());
  for (double s : *uniform) EXPECT_DOUBLE_EQ(s, 0.6);
  OwlOptions wide;
  wide.lambda = 0.3;
  auto clamped = owl_sparsities({0.0, 0.1, 0.1, 0.1}, 0.9, wide);  // block 0 would go past 1
  ASSERT_TRUE(clamped.is_ok());
  EXPECT_NEAR(mean(*clamped), 0.9, 1e-12);
  for (double s : *clamped) EXPECT_LE(s, 1.0);
  EXPECT_DOUBLE_EQ((*clamped)[0], 1.0);
}

TEST(Owl, RefusesImpossibleTargets) {
  EXPECT_FALSE(owl_sparsities({0.1, 0.2}, 0.0, OwlOptions{}).is_ok());
  EXPECT_FALSE(owl_sparsities({0.1, 0.2}, 1.0, OwlOptions{}).is_ok());
  EXPECT_FALSE(owl_sparsities({}, 0.5, OwlOptions{}).is_ok());
  OwlOptions negative;
  negative.lambda = -0.1;
  EXPECT_FALSE(owl_sparsities({0.1, 0.2}, 0.5, negative).is_ok());
}

TEST(Owl, OutlierRatioCountsScoresAboveMTimesTheMean) {
  // 100 scores of 1 and 2 of 100: mean (100 + 200) / 102 ~ 2.94, threshold 14.7 at M = 5.
  std::vector<float> w(102, 1.0f);
  w[7] = 100.0f;
  w[50] = -100.0f;  // magnitudes count
  const std::vector<float> norms(51, 1.0f);
  OutlierCounter counter;
  counter.add_wanda_scores(w.data(), 2, 51, norms.data());
  EXPECT_DOUBLE_EQ(counter.ratio(5.0), 2.0 / 102.0);
  // The activation norm makes a column an outlier even with small weights.
  std::vector<float> flat(102, 1.0f), loud(51, 1.0f);
  loud[3] = 40.0f;
  OutlierCounter weighted;
  weighted.add_wanda_scores(flat.data(), 2, 51, loud.data());
  EXPECT_DOUBLE_EQ(weighted.ratio(5.0), 2.0 / 102.0);
  EXPECT_EQ(OutlierCounter().ratio(5.0), 0.0);
}

}  // namespace
}  // namespace frugal::compress
