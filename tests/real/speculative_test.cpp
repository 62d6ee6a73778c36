// Real tests of speculative decoding on SmolLM2-135M Q4_1: batched verification rows bit-identical
// to the one-token path (batch-invariant kernels), greedy speculation token-for-token plain greedy
// for every drafter (a frugal-quantized copy as draft model, early-exit self-draft, n-gram lookup)
// and draft length, and the KV cache after rejections byte-identical to plain decoding's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "compress/quantize_model.h"
#include "support/test_support.h"

namespace frugal {
namespace {

std::shared_ptr<const Model> smollm2() {
  auto m = Model::load(testing::real_model_path());
  EXPECT_TRUE(m.is_ok()) << "real model missing at " << testing::real_model_path();
  return m.is_ok() ? m.value() : nullptr;
}

TransformerOptions target_options(bool all_logits) {
  TransformerOptions o;
  o.n_ctx = 256;
  o.n_batch = kSpeculativeBatch;
  o.n_threads = 2;
  o.all_logits = all_logits;
  return o;
}

TEST(SpeculativeReal, BatchedRowsAreBitIdenticalToTheOneTokenPath) {
  auto model = smollm2();
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> tokens =
      model->tokenizer().encode("The quick brown fox jumps over the lazy dog. The quick brown fox jumps over", true, true);
  ASSERT_GT(tokens.size(), 12u);
  const int64_t vocab = model->config().n_vocab;
  const int64_t split = static_cast<int64_t>(tokens.size()) - 9;
  Transformer single(model, target_options(true)), batched(model, target_options(true));
  ASSERT_TRUE(single.evaluate(tokens.data(), split).is_ok());
  ASSERT_TRUE(batched.evaluate(tokens.data(), split).is_ok());
  ASSERT_TRUE(batched.evaluate(tokens.data() + split, static_cast<int64_t>(tokens.size()) - split).is_ok());
  int64_t differing = 0;
  float worst = 0;
  for (size_t i = split; i < tokens.size(); ++i) {
    ASSERT_TRUE(single.evaluate(&tokens[i], 1).is_ok());
    const float* a = single.last_logits();
    const float* b = batched.logits(static_cast<int64_t>(i) - split);
    for (int64_t v = 0; v < vocab; ++v) {
      worst = std::max(worst, std::fabs(a[v] - b[v]));
      differing += std::memcmp(&a[v], &b[v], sizeof(float)) != 0;
    }
  }
  // Before the kernels were batch-invariant the rows differed by up to 0.89 logits (AVX2).
  EXPECT_EQ(differing, 0) << "largest |batched - one-token| logit difference: " << worst;
}

// Proposes tokens that are never the target's choice, so every verification rolls back.
class WrongDrafter : public Drafter {
 public:
  WrongDrafter(std::vector<int32_t> truth, int64_t vocab) : truth_(std::move(truth)), vocab_(vocab) {}
  std::string name() const override { return "wrong"; }
  Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) override {
    out.clear();
    const int32_t right = context.size() < truth_.size() ? truth_[context.size()] : 0;
    for (int i = 0; i < max_tokens; ++i) out.push_back(static_cast<int32_t>((right + 1 + 13 * i) % vocab_));
    return Status::ok();
  }

 private:
  std::vector<int32_t> truth_;
  int64_t vocab_;
};

TEST(SpeculativeReal, GreedyIsPlainGreedyForEveryDrafterAndLengthAndRollbackIsExact) {
  auto model = smollm2();
  ASSERT_NE(model, nullptr);
  // A frugal-quantized copy of the target as the draft model (another format: its argmaxes differ
  // from the target's now and then, so drafts are both accepted and rejected).
  const std::string draft_path = testing::temp_dir() + "/smollm2_q4_0_draft.gguf";
  QuantizeOptions qo;
  qo.format = "q4_0";
  auto report = quantize_model(testing::real_model_path(), draft_path, qo, [](int64_t, int64_t, const std::string&) {});
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  auto draft_model = Model::load(draft_path);
  ASSERT_TRUE(draft_model.is_ok()) << draft_model.status().message();

  // A copy-heavy prompt with two draft lengths, an open-ended one with a third (the test budget).
  const std::vector<std::pair<std::string, std::vector<int>>> cases = {
      {"Rewrite this sentence: The committee approved the new budget after a long debate about the costs.", {3, 8}},
      {"Once upon a time", {5}}};
  const int64_t n = 32;
  int64_t total_accepted = 0, total_rejected = 0;
  for (const auto& [text, lengths] : cases) {
    const std::vector<int32_t> prompt = model->tokenizer().encode(text, true, true);
    Transformer plain(model, target_options(false));
    auto expected = greedy_reference(plain, prompt, n);
    ASSERT_TRUE(expected.is_ok());
    for (int k : lengths) {
      ModelDrafterOptions mo;
      mo.p_min = 0;  // draft all k: more rejections to roll back
      auto quantized = make_model_drafter(*draft_model, *model, mo);
      ASSERT_TRUE(quantized.is_ok()) << quantized.status().message();
      mo.exit_layer = 10;
      auto self = make_model_drafter(model, *model, mo);
      ASSERT_TRUE(self.is_ok());
      auto ngram = make_ngram_drafter({});
      WrongDrafter wrong(*expected, model->config().n_vocab);
      for (Drafter* drafter : {quantized->get(), self->get(), ngram.get(), static_cast<Drafter*>(&wrong)}) {
        SpeculativeOptions so;
        so.draft_max = k;
        so.adaptive = false;
        Transformer target(model, target_options(true));
        SpeculativeDecoder decoder(target, drafter, so);
        ASSERT_TRUE(decoder.start(prompt).is_ok());
        std::vector<int32_t> out;
        while (static_cast<int64_t>(out.size()) < n) ASSERT_TRUE(decoder.step(out).is_ok());
        const SpeculativeStats& st = decoder.stats();
        EXPECT_EQ(st.tie_fallbacks, 0);
        total_accepted += st.accepted;
        total_rejected += st.drafted - st.accepted;
        std::vector<int32_t> got = prompt;
        got.insert(got.end(), out.begin(), out.begin() + n);
        ASSERT_EQ(got, *expected) << drafter->name() << " k=" << k << " prompt '" << text << "'";
        // The target's cache after rejections and rollbacks holds exactly the bytes plain decoding
        // wrote for the same positions (the rejected drafts' keys and values left no trace).
        const int64_t positions = std::min(target.position(), plain.position());
        ASSERT_GT(positions, static_cast<int64_t>(prompt.size()));
        // (KvCache has no const value_row; nothing is written through these.)
        KvCache& a = const_cast<KvCache&>(target.kv_cache());
        KvCache& b = const_cast<KvCache&>(plain.kv_cache());
        for (int64_t layer = 0; layer < model->config().n_layer; ++layer) {
          ASSERT_EQ(0, std::memcmp(a.key_row(layer, 0), b.key_row(layer, 0), positions * a.key_row_bytes()))
              << drafter->name() << " k=" << k << " layer " << layer;
          ASSERT_EQ(0, std::memcmp(a.value_row(layer, 0), b.value_row(layer, 0), positions * a.value_row_bytes()))
              << drafter->name() << " k=" << k << " layer " << layer;
        }
      }
    }
  }
  EXPECT_GT(total_accepted, 30);     // the drafters do propose the right tokens ...
  EXPECT_GT(total_rejected, 30);     // ... and rejected ones are rolled back
}

}  // namespace
}  // namespace frugal
