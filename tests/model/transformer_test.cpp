// Model tests on tiny random Llama models the test writes itself: decoding token by token over the
// KV cache must give the same logits as evaluating the whole sequence at once.
#include <gtest/gtest.h>

#include <cmath>

#include "support/test_support.h"

namespace frugal {
namespace {

struct Case {
  DType type;
  bool tied;
  float tolerance;
};

class KvCacheConsistency : public ::testing::TestWithParam<Case> {};

std::vector<std::vector<float>> decode_one_by_one(const std::shared_ptr<const Model>& model,
                                                  const std::vector<int32_t>& tokens, int threads) {
  TransformerOptions options;
  options.n_ctx = 64;
  options.n_batch = 8;
  options.n_threads = threads;
  Transformer t(model, options);
  std::vector<std::vector<float>> rows;
  for (int32_t token : tokens) {
    EXPECT_TRUE(t.evaluate(&token, 1).is_ok());
    rows.emplace_back(t.last_logits(), t.last_logits() + model->config().n_vocab);
  }
  return rows;
}

TEST_P(KvCacheConsistency, DecodeMatchesFullRecompute) {
  const Case c = GetParam();
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.weight_type = c.type;
  o.tied_output = c.tied;
  ASSERT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto loaded = Model::load(path);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
  std::shared_ptr<const Model> model = loaded.value();
  const int64_t vocab = model->config().n_vocab;
  ASSERT_EQ(model->tied_output(), c.tied);

  const std::vector<int32_t> tokens = {72, 101, 108, 108, 111, 256, 44, 32, 119, 111, 114, 108, 100, 257, 33, 10};
  const auto incremental = decode_one_by_one(model, tokens, 2);

  // The whole sequence in one batch (prefill path: tiled matmul, causal attention over the batch).
  TransformerOptions options;
  options.n_ctx = 64;
  options.n_batch = 16;
  options.n_threads = 2;
  options.all_logits = true;
  Transformer full(model, options);
  ASSERT_TRUE(full.evaluate(tokens.data(), static_cast<int64_t>(tokens.size())).is_ok());

  // A split prefill (5 + 11 tokens) reuses the cache between batches.
  Transformer split(model, options);
  ASSERT_TRUE(split.evaluate(tokens.data(), 5).is_ok());
  ASSERT_TRUE(split.evaluate(tokens.data() + 5, 11).is_ok());

  float worst = 0, scale = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (int64_t v = 0; v < vocab; ++v) {
      worst = std::max(worst, std::fabs(full.logits(static_cast<int64_t>(i))[v] - incremental[i][v]));
      scale = std::max(scale, std::fabs(incremental[i][v]));
      if (i >= 5) worst = std::max(worst, std::fabs(split.logits(static_cast<int64_t>(i - 5))[v] - incremental[i][v]));
    }
  }
  EXPECT_GT(scale, 0.1f) << "logits are degenerate";
  EXPECT_LT(worst, c.tolerance) << type_traits(c.type).name;

  // One thread and two threads compute the same thing.
  const auto single = decode_one_by_one(model, tokens, 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (int64_t v = 0; v < vocab; ++v) ASSERT_NEAR(single[i][v], incremental[i][v], c.tolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, KvCacheConsistency,
                         ::testing::Values(Case{DType::F32, false, 2e-4f}, Case{DType::F16, true, 2e-4f},
                                           Case{DType::Q8_0, false, 2e-4f}, Case{DType::Q4_1, false, 2e-4f},
                                           Case{DType::Q4_0, true, 2e-4f}),
                         [](const auto& info) { return std::string(type_traits(info.param.type).name) + (info.param.tied ? "_tied" : ""); });

TEST(TinyModel, TruncateRewindsTheCache) {
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  ASSERT_TRUE(testing::write_tiny_model(path, {}).is_ok());
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok());
  TransformerOptions options;
  options.n_ctx = 32;
  Transformer t(model.value(), options);
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {1, 2, 9, 9};
  ASSERT_TRUE(t.evaluate(a.data(), 4).is_ok());
  const std::vector<float> first(t.last_logits(), t.last_logits() + model.value()->config().n_vocab);
  t.truncate(2);
  ASSERT_TRUE(t.evaluate(b.data() + 2, 2).is_ok());
  t.truncate(2);
  ASSERT_TRUE(t.evaluate(a.data() + 2, 2).is_ok());
  for (size_t v = 0; v < first.size(); ++v) ASSERT_NEAR(first[v], t.last_logits()[v], 1e-5f);
}

TEST(TinyModel, ContextOverflowIsAnError) {
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  ASSERT_TRUE(testing::write_tiny_model(path, {}).is_ok());
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok());
  TransformerOptions options;
  options.n_ctx = 8;
  Transformer t(model.value(), options);
  std::vector<int32_t> tokens(9, 5);
  Status s = t.evaluate(tokens.data(), 9);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("context"), std::string::npos);
  tokens[0] = 100000;
  EXPECT_FALSE(t.evaluate(tokens.data(), 1).is_ok());
}

}  // namespace
}  // namespace frugal
