// Model tests of speculative decoding on tiny random models: greedy output token-for-token equal to
// plain one-token greedy decoding for every drafter and draft length, KV-cache rollback leaving no
// trace of rejected drafts, batched verification rows against the one-token path, and a draft
// with another vocabulary refused.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "support/test_support.h"

namespace frugal {
namespace {

std::shared_ptr<const Model> tiny(const std::string& name, const testing::TinyModelOptions& o) {
  const std::string path = testing::temp_dir() + "/" + name + ".gguf";
  EXPECT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto m = Model::load(path);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.value();
}

TransformerOptions target_options() {
  TransformerOptions o;
  o.n_ctx = 256;
  o.n_batch = kSpeculativeBatch;
  o.n_threads = 1;  // the tests run next to others on 2 cores
  o.all_logits = true;
  return o;
}

// Prompts: random ones, and repetitive ones (where n-gram lookup drafts a lot).
std::vector<std::vector<int32_t>> prompts(int64_t vocab) {
  std::vector<std::vector<int32_t>> out;
  std::mt19937 rng(7);
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p(1 + rng() % 20);
    for (auto& t : p) t = static_cast<int32_t>(rng() % vocab);
    out.push_back(p);
  }
  std::vector<int32_t> repeated;
  for (int r = 0; r < 4; ++r) {
    for (int32_t t : {72, 101, 108, 108, 111, 32, 119, 111}) repeated.push_back(t);
  }
  out.push_back(repeated);
  return out;
}

std::vector<int32_t> reference(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& prompt, int64_t n) {
  TransformerOptions o = target_options();
  o.all_logits = false;
  Transformer t(model, o);
  auto r = greedy_reference(t, prompt, n);
  EXPECT_TRUE(r.is_ok());
  return r.value();
}

std::vector<int32_t> speculative(const std::shared_ptr<const Model>& model, Drafter* drafter, const SpeculativeOptions& options,
                                 const std::vector<int32_t>& prompt, int64_t n, SpeculativeStats* stats = nullptr) {
  Transformer t(model, target_options());
  SpeculativeDecoder d(t, drafter, options);
  EXPECT_TRUE(d.start(prompt).is_ok());
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < n) {
    const Status s = d.step(out);
    EXPECT_TRUE(s.is_ok()) << s.message();
    if (!s) break;
    // The target's cache holds the context minus its last token after every step.
    EXPECT_EQ(t.position() + 1, static_cast<int64_t>(d.context().size()));
  }
  out.resize(static_cast<size_t>(n));
  if (stats) *stats = d.stats();
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), out.begin(), out.end());
  return all;
}

TEST(Speculative, GreedyEqualsPlainDecodingForEveryDrafterAndLength) {
  auto target = tiny("target", {});
  testing::TinyModelOptions draft_options;
  draft_options.seed = 2;
  draft_options.n_layer = 1;
  draft_options.n_embd = 32;
  draft_options.n_ff = 48;
  auto other = tiny("draft", draft_options);
  const int64_t n = 32;
  for (const auto& prompt : prompts(target->config().n_vocab)) {
    const auto expected = reference(target, prompt, n);
    for (int k : {1, 3, 8}) {
      for (bool adaptive : {false, true}) {
        SpeculativeOptions options;
        options.draft_max = k;
        options.adaptive = adaptive;
        ModelDrafterOptions mo;
        mo.n_threads = 1;
        mo.p_min = adaptive ? 0.2f : 0.0f;
        auto random_draft = make_model_drafter(other, *target, mo);
        ASSERT_TRUE(random_draft.is_ok()) << random_draft.status().message();
        auto self = make_model_drafter(target, *target, mo);  // the target itself: every draft accepted
        mo.exit_layer = 1;
        auto early_exit = make_model_drafter(target, *target, mo);
        auto ngram = make_ngram_drafter({});
        for (Drafter* drafter : {random_draft->get(), self->get(), early_exit->get(), ngram.get()}) {
          SpeculativeStats stats;
          EXPECT_EQ(speculative(target, drafter, options, prompt, n, &stats), expected)
              << drafter->name() << " k=" << k << " adaptive=" << adaptive;
          EXPECT_GE(stats.emitted, n);
          if (drafter == self->get() && !adaptive) {
            // The accept path and the bonus token are exercised: the target drafting for itself
            // (rows within the tie margin, frequent in a random model, count as rejections).
            EXPECT_GT(stats.verifications, 0);
            EXPECT_GT(stats.acceptance_rate(), 0.7) << "k=" << k;
            EXPECT_GT(stats.tokens_per_verification(), std::min(k, 2) + 0.5) << "k=" << k;
          }
        }
      }
    }
  }
}

TEST(Speculative, NearTiesAreDecidedByTheOneTokenPath) {
  // A huge tie margin sends every row to the fallback: the output must still be plain greedy's.
  auto target = tiny("target", {});
  ModelDrafterOptions mo;
  mo.p_min = 0;
  auto self = make_model_drafter(target, *target, mo);
  ASSERT_TRUE(self.is_ok());
  SpeculativeOptions options;
  options.adaptive = false;
  options.tie_margin = 1e30f;
  const std::vector<int32_t> prompt = {5, 17, 99, 200};
  SpeculativeStats stats;
  EXPECT_EQ(speculative(target, self->get(), options, prompt, 20, &stats), reference(target, prompt, 20));
  EXPECT_GT(stats.tie_fallbacks, 0);
  EXPECT_EQ(stats.accepted, 0);
}

// Proposes k tokens that are never the target's choice (it knows the plain greedy continuation).
class WrongDrafter : public Drafter {
 public:
  WrongDrafter(std::vector<int32_t> truth, int32_t offset, int64_t vocab) : truth_(std::move(truth)), offset_(offset), vocab_(vocab) {}
  std::string name() const override { return "wrong"; }
  Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) override {
    out.clear();
    const size_t next = context.size();
    for (int i = 0; i < max_tokens; ++i) {
      const int32_t right = next < truth_.size() ? truth_[next] : 0;
      out.push_back(static_cast<int32_t>((right + offset_ + i) % vocab_));
    }
    return Status::ok();
  }

 private:
  std::vector<int32_t> truth_;
  int32_t offset_;
  int64_t vocab_;
};

TEST(Speculative, RollbackLeavesNoTraceOfRejectedDrafts) {
  auto target = tiny("target", {});
  const int64_t vocab = target->config().n_vocab;
  const std::vector<int32_t> prompt = {72, 101, 108, 108, 111};
  const auto expected = reference(target, prompt, 24);
  SpeculativeOptions options;
  options.adaptive = false;
  options.draft_max = 4;
  // Two drafters rejected at every step with different wrong tokens: after rolling back, the
  // target's cache (and so its logits) must be bit-identical, i.e. no rejected key/value is read.
  std::vector<std::vector<float>> final_logits;
  for (int32_t offset : {1, 7}) {
    WrongDrafter wrong(expected, offset, vocab);
    Transformer t(target, target_options());
    SpeculativeDecoder d(t, &wrong, options);
    ASSERT_TRUE(d.start(prompt).is_ok());
    std::vector<int32_t> out;
    while (out.size() < 20) ASSERT_TRUE(d.step(out).is_ok());
    EXPECT_EQ(d.stats().accepted, 0);
    EXPECT_GT(d.stats().verifications, 10);
    std::vector<int32_t> got = prompt;
    got.insert(got.end(), out.begin(), out.end());
    EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), expected.begin() + static_cast<int64_t>(got.size())));
    const int32_t last = d.context().back();
    ASSERT_TRUE(t.evaluate(&last, 1).is_ok());
    final_logits.emplace_back(t.last_logits(), t.last_logits() + vocab);
  }
  ASSERT_EQ(final_logits[0].size(), final_logits[1].size());
  for (int64_t v = 0; v < vocab; ++v) ASSERT_EQ(final_logits[0][v], final_logits[1][v]) << v;
}

TEST(Speculative, BatchedVerificationRowsMatchTheOneTokenPathWithinTolerance) {
  // The documented tolerance (speculative.h): verification rows differ from the one-token path
  // only by summation order, far below the tie margin; where the margin exceeds it, argmaxes agree.
  for (DType type : {DType::F32, DType::Q8_0, DType::Q4_0}) {
    testing::TinyModelOptions o;
    o.weight_type = type;
    auto model = tiny("typed", o);
    const int64_t vocab = model->config().n_vocab;
    const std::vector<int32_t> tokens = {72, 101, 108, 108, 111, 256, 44, 32, 119, 111, 114, 108};
    const int64_t split = 6;  // cache holds tokens[0..split), then a verification batch of the rest
    TransformerOptions so = target_options();
    Transformer single(model, so);
    Transformer batched(model, so);
    ASSERT_TRUE(single.evaluate(tokens.data(), split).is_ok());
    ASSERT_TRUE(batched.evaluate(tokens.data(), split).is_ok());
    ASSERT_TRUE(batched.evaluate(tokens.data() + split, static_cast<int64_t>(tokens.size()) - split).is_ok());
    float worst = 0;
    for (size_t i = split; i < tokens.size(); ++i) {
      ASSERT_TRUE(single.evaluate(&tokens[i], 1).is_ok());
      const float* a = single.last_logits();
      const float* b = batched.logits(static_cast<int64_t>(i) - split);
      for (int64_t v = 0; v < vocab; ++v) worst = std::max(worst, std::fabs(a[v] - b[v]));
      float margin = 0;
      const int32_t best = argmax_with_margin(a, vocab, &margin);
      if (margin > SpeculativeOptions{}.tie_margin) {
        EXPECT_EQ(best, argmax_with_margin(b, vocab, nullptr));
      }
    }
    EXPECT_LT(worst, SpeculativeOptions{}.tie_margin / 10) << type_traits(type).name;
  }
}

TEST(Speculative, DraftWithAnotherVocabularyIsRefused) {
  auto target = tiny("target", {});
  testing::TinyModelOptions o;
  o.n_merges = 5;
  auto other = tiny("other_vocab", o);
  auto d = make_model_drafter(other, *target, {});
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("vocabulary"), std::string::npos) << d.status().message();
  ModelDrafterOptions bad;
  bad.exit_layer = 99;
  EXPECT_FALSE(make_model_drafter(target, *target, bad).is_ok());
}

TEST(Speculative, RunCommandComparesWithPlainGreedyAndRefusesAnotherVocabulary) {
  const std::string dir = testing::temp_dir();
  ASSERT_TRUE(testing::write_tiny_model(dir + "/target.gguf", {}).is_ok());
  testing::TinyModelOptions o;
  o.n_merges = 5;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/other.gguf", o).is_ok());
  const std::string base = testing::shell_quote(testing::frugal_binary()) + " run -m " + testing::shell_quote(dir + "/target.gguf") +
                           " -p 'hello hello hello hello' -n 24 -t 1 --temp 0";
  auto ok = testing::run_command(base + " --draft ngram --draft-max 4 --draft-compare");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.err.find("outputs identical: yes"), std::string::npos) << ok.err;
  EXPECT_NE(ok.err.find("acceptance"), std::string::npos) << ok.err;
  auto refused = testing::run_command(base + " --draft " + testing::shell_quote(dir + "/other.gguf"));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("vocabulary"), std::string::npos) << refused.err;
  auto sampling = testing::run_command(base.substr(0, base.size() - 9) + " --temp 0.8 --draft ngram");
  EXPECT_NE(sampling.exit_code, 0);
  EXPECT_NE(sampling.err.find("--temp 0"), std::string::npos) << sampling.err;
}

TEST(Speculative, NgramLookupProposesWhatFollowedTheLatestMatch) {
  auto ngram = make_ngram_drafter({});
  std::vector<int32_t> out;
  const std::vector<int32_t> context = {1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7, 2, 3, 4};
  ASSERT_TRUE(ngram->draft(context, 3, out).is_ok());
  EXPECT_EQ(out, (std::vector<int32_t>{6, 7, 2}));  // "2 3 4" last seen before 6 7
  ASSERT_TRUE(ngram->draft(std::vector<int32_t>{1, 2, 3}, 3, out).is_ok());
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace frugal
