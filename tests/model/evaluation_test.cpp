// frugal eval's measurements on tiny random models: a model against itself has zero divergence and
// 100% top-token agreement; a re-quantized copy has a small positive divergence that grows as the
// bits shrink; task scoring picks the ending the model likes best.
#include <gtest/gtest.h>

#include "compress/quantize_model.h"
#include "support/test_support.h"

namespace frugal {
namespace {

std::vector<int32_t> random_tokens(int64_t n, int32_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> out(n);
  for (auto& t : out) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return out;
}

TransformerOptions all_logits(int64_t n_ctx) {
  TransformerOptions o;
  o.n_ctx = n_ctx;
  o.n_batch = n_ctx;
  o.all_logits = true;
  return o;
}

TEST(Evaluation, DivergenceIsZeroAgainstItselfAndGrowsWithFewerBits) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_embd = 256;
  o.n_ff = 512;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/base.gguf", o).is_ok());
  auto base = Model::load(dir + "/base.gguf");
  ASSERT_TRUE(base.is_ok());
  const auto tokens = random_tokens(4 * 64, static_cast<int32_t>(base.value()->config().n_vocab), 5);
  Transformer base_t(base.value(), all_logits(64));

  Transformer same(base.value(), all_logits(64));
  auto self = compare_distributions(same, base_t, tokens, 64, -1, nullptr);
  ASSERT_TRUE(self.is_ok()) << self.status().message();
  EXPECT_EQ(self->chunks, 4);
  EXPECT_EQ(self->tokens, 4 * 31);
  EXPECT_NEAR(self->kld_mean, 0.0, 1e-9);
  EXPECT_NEAR(self->kld_max, 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(self->same_top_pct, 100.0);
  EXPECT_DOUBLE_EQ(self->ppl, self->base_ppl);

  double previous = 0;
  for (const char* format : {"q8_0", "q4_1", "q2_k"}) {
    QuantizeOptions q;
    q.format = format;
    q.embedding_format = format;
    const std::string path = dir + "/" + format + ".gguf";
    ASSERT_TRUE(quantize_model(dir + "/base.gguf", path, q, nullptr).is_ok());
    auto quantized = Model::load(path);
    ASSERT_TRUE(quantized.is_ok());
    Transformer t(quantized.value(), all_logits(64));
    auto r = compare_distributions(t, base_t, tokens, 64, -1, nullptr);
    ASSERT_TRUE(r.is_ok());
    EXPECT_GT(r->kld_mean, previous) << format;
    EXPECT_LE(r->kld_median, r->kld_p99);
    EXPECT_LE(r->kld_p99, r->kld_max);
    EXPECT_LT(r->same_top_pct, 100.0 + 1e-9);
    previous = r->kld_mean;
  }
  EXPECT_GT(previous, 1e-3);
}

TEST(Evaluation, ParsersRejectMalformedFiles) {
  EXPECT_FALSE(parse_hellaswag("ctx\n1\na\nb\nc\n").is_ok());
  EXPECT_FALSE(parse_hellaswag("ctx\n7\na\nb\nc\nd\n").is_ok());
  auto ok = parse_hellaswag("ctx\n2\na\nb\nc\nd\n");
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->at(0).gold, 2);
  EXPECT_EQ(ok->at(0).endings[3], "d");
  EXPECT_FALSE(parse_sst2("sentence\tlabel\nno tab here\n").is_ok());
  EXPECT_FALSE(parse_sst2("sentence\tlabel\n").is_ok());
  auto sst = parse_sst2("sentence\tlabel\ngood movie \t1\nbad\t0\n");
  ASSERT_TRUE(sst.is_ok());
  ASSERT_EQ(sst->size(), 2u);
  EXPECT_EQ(sst->at(0).sentence, "good movie");
  EXPECT_EQ(sst->at(1).label, 0);
}

TEST(Evaluation, HellaswagPicksTheLikeliestEnding) {
  // A task whose gold ending is the model's own greedy continuation must be answered correctly
  // when the other endings are random tokens' text.
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  ASSERT_TRUE(testing::write_tiny_model(path, {}).is_ok());
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok());
  Transformer t(model.value(), all_logits(128));
  const Tokenizer& tok = model.value()->tokenizer();
  const std::string context = "the theater";
  std::vector<int32_t> ids = tok.encode(context + " ", false, false);
  std::string greedy;
  for (int i = 0; i < 6; ++i) {
    t.truncate(0);
    ASSERT_TRUE(t.evaluate(ids.data(), static_cast<int64_t>(ids.size())).is_ok());
    const float* logits = t.logits(static_cast<int64_t>(ids.size()) - 1);
    int32_t best = 0;
    for (int32_t v = 1; v < 256; ++v) if (logits[v] > logits[best]) best = v;  // byte tokens only
    ids.push_back(best);
    greedy += tok.token_to_piece(best);
  }
  HellaswagTask task;
  task.context = context;
  task.gold = 2;
  task.endings[0] = "zqxv";
  task.endings[1] = "}}]]";
  task.endings[2] = greedy;
  task.endings[3] = "@@##";
  auto r = hellaswag_accuracy(t, {task}, -1, nullptr);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->tasks, 1);
  EXPECT_EQ(r->correct, 1) << "greedy ending: " << greedy;
}

}  // namespace
}  // namespace frugal
