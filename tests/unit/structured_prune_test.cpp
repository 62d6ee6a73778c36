// Structured pruning's selection rules: how many blocks or channels a sparsity removes (and which
// sparsities are refused), which blocks and channels go, and the fallback types of re-encoded rows.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "compress/structured_prune.h"
#include "tensor/generic_group.h"

namespace frugal::compress {
namespace {

TEST(StructuredPrune, BlocksToRemoveRoundsAndRefusesImpossibleSparsities) {
  EXPECT_EQ(blocks_to_remove(30, 0.1).value(), 3);
  EXPECT_EQ(blocks_to_remove(30, 0.2).value(), 6);
  EXPECT_EQ(blocks_to_remove(30, 0.3).value(), 9);
  EXPECT_EQ(blocks_to_remove(30, 0.05).value(), 2);  // 1.5 rounds up
  EXPECT_EQ(blocks_to_remove(2, 0.5).value(), 1);
  for (double bad : {0.0, 1.0, -0.1, 1.5, std::nan("")}) {
    auto r = blocks_to_remove(30, bad);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_NE(r.status().message().find("--sparsity"), std::string::npos);
  }
  auto none = blocks_to_remove(30, 0.01);  // 0.3 of a block
  ASSERT_FALSE(none.is_ok());
  EXPECT_NE(none.status().message().find("no block"), std::string::npos) << none.status().message();
  auto all = blocks_to_remove(4, 0.9);  // 3.6 rounds to all 4
  ASSERT_FALSE(all.is_ok());
  EXPECT_NE(all.status().message().find("all 4"), std::string::npos) << all.status().message();
}

TEST(StructuredPrune, LeastInfluentialBlocksAreTheLowestScores) {
  const std::vector<double> influence = {0.9, 0.05, 0.3, 0.02, 0.02, 0.4};
  EXPECT_EQ(least_influential_blocks(influence, 1), (std::vector<int64_t>{4}));  // tie: the later block
  EXPECT_EQ(least_influential_blocks(influence, 3), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(least_influential_blocks(influence, 4), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(StructuredPrune, FfnWidthIsAMultipleOf32AndRefusesImpossibleSparsities) {
  EXPECT_EQ(ffn_width_after(1536, 0.1).value(), 1376);  // 1382.4 -> 43 x 32
  EXPECT_EQ(ffn_width_after(1536, 0.2).value(), 1216);
  EXPECT_EQ(ffn_width_after(1536, 0.3).value(), 1088);
  EXPECT_EQ(ffn_width_after(96, 0.3).value(), 64);
  EXPECT_FALSE(ffn_width_after(1536, 0.005).is_ok());  // rounds back to 1536
  EXPECT_FALSE(ffn_width_after(96, 0.9).is_ok());      // no channel left
  EXPECT_FALSE(ffn_width_after(96, 0.0).is_ok());
  EXPECT_FALSE(ffn_width_after(96, 1.0).is_ok());
}

TEST(StructuredPrune, ChannelScoresFollowActivationsAndOutputWeights) {
  const int64_t embd = 4, ff = 6;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.5f, 1.0f);
  std::vector<float> gate(ff * embd), up(ff * embd), down(embd * ff);
  for (auto& v : gate) v = u(rng);
  for (auto& v : up) v = u(rng);
  for (auto& v : down) v = u(rng);
  // Channel 2 never contributes to the output (zero down column, silent hidden activation);
  // channel 4 reads only an input column that is never active.
  for (int64_t r = 0; r < embd; ++r) down[r * ff + 2] = 0.0f;
  for (int64_t j = 0; j < embd; ++j) {
    gate[4 * embd + j] = j == 3 ? 50.0f : 0.0f;
    up[4 * embd + j] = j == 3 ? 50.0f : 0.0f;
  }
  const std::vector<double> input = {4.0, 4.0, 4.0, 0.0};
  std::vector<double> hidden(ff, 1.0);
  hidden[2] = 0.0;
  hidden[4] = 0.0;
  const auto scores = ffn_channel_scores(gate.data(), up.data(), down.data(), embd, ff, input, hidden);
  for (int64_t c : {0, 1, 3, 5}) {
    EXPECT_GT(scores[c], scores[2]) << c;
    EXPECT_GT(scores[c], scores[4]) << c;
  }
  EXPECT_EQ(scores[4], 0.0);
  EXPECT_EQ(top_channels(scores, 4), (std::vector<int64_t>{0, 1, 3, 5}));
  // Scaling one channel's output weights raises its score.
  for (int64_t r = 0; r < embd; ++r) down[r * ff + 1] *= 10.0f;
  const auto scaled = ffn_channel_scores(gate.data(), up.data(), down.data(), embd, ff, input, hidden);
  EXPECT_EQ(top_channels(scaled, 1), (std::vector<int64_t>{1}));
}

TEST(StructuredPrune, KvGroupsToRemoveAndTheirScores) {
  EXPECT_EQ(kv_groups_to_remove(3, 0.33).value(), 1);
  EXPECT_EQ(kv_groups_to_remove(3, 0.5).value(), 2);  // 1.5 rounds up
  EXPECT_EQ(kv_groups_to_remove(8, 0.25).value(), 2);
  EXPECT_FALSE(kv_groups_to_remove(3, 0.1).is_ok());  // no group
  EXPECT_FALSE(kv_groups_to_remove(3, 0.9).is_ok());  // every group
  EXPECT_FALSE(kv_groups_to_remove(3, 0.0).is_ok());
  // 4 query heads of 2 dims in 2 KV groups (heads 0,1 | 2,3); Wo is 3 x 8.
  const int64_t embd = 3, heads = 4, kv = 2, hd = 2;
  std::vector<float> wo(embd * heads * hd, 1.0f);
  std::vector<double> out(heads * hd, 4.0);  // ||A_h|| = sqrt(8) for every head
  auto scores = kv_group_scores(wo.data(), embd, heads, kv, hd, out);
  ASSERT_EQ(scores.size(), 2u);
  // Each head: ||Wo cols|| = sqrt(3 * 2), ||A_h|| = sqrt(2 * 4); a group sums two heads.
  EXPECT_NEAR(scores[0], 2.0 * std::sqrt(6.0) * std::sqrt(8.0), 1e-9);
  EXPECT_NEAR(scores[1], scores[0], 1e-9);
  for (int64_t i = 4; i < 6; ++i) out[i] = 0.0;  // head 2 silent: group 1 keeps only head 3's share
  scores = kv_group_scores(wo.data(), embd, heads, kv, hd, out);
  EXPECT_NEAR(scores[1], 0.5 * scores[0], 1e-9);
  EXPECT_EQ(top_channels(scores, 1), (std::vector<int64_t>{0}));
}

TEST(StructuredPrune, ReencodedRowsFallBackToATypeWhoseBlockFits) {
  EXPECT_EQ(type_for_row_length(DType::Q4_1, 1376), DType::Q4_1);
  EXPECT_EQ(type_for_row_length(DType::Q4_K, 1536), DType::Q4_K);
  EXPECT_EQ(type_for_row_length(DType::Q4_K, 1376), DType::Q5_0);
  EXPECT_EQ(type_for_row_length(DType::Q6_K, 1376), DType::Q8_0);
  EXPECT_EQ(type_for_row_length(DType::Q3_K, 1376), DType::Q4_0);
  EXPECT_EQ(type_for_row_length(DType::F16, 1376), DType::F16);
  const DType g128 = *generic_group_type(3, 128, false);
  EXPECT_EQ(type_for_row_length(g128, 1408), g128);                                  // 11 x 128
  EXPECT_EQ(type_for_row_length(g128, 1376), *generic_group_type(3, 32, false));      // 43 x 32
  EXPECT_EQ(type_for_row_length(g128, 1344), *generic_group_type(3, 64, false));      // 21 x 64
}

}  // namespace
}  // namespace frugal::compress
