// Model tests of speculative decoding on tiny random models: greedy output token-for-token equal to
// plain one-token greedy decoding for every drafter and draft length, KV-cache rollback leaving no
// trace of rejected drafts, batched verification rows bit-identical to the one-token path, and a
// draft with another vocabulary refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "support/sampling_support.h"
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
            // The accept path and the bonus token are exercised: the target drafting for itself.
            EXPECT_GT(stats.verifications, 0);
            EXPECT_GT(stats.acceptance_rate(), 0.7) << "k=" << k;
            EXPECT_GT(stats.tokens_per_verification(), std::min(k, 2) + 0.5) << "k=" << k;
          }
        }
      }
    }
  }
}

// Proposes the continuation of a known token sequence (the reference output: always right), or a
// token that plain greedy never chooses next (always wrong). Free: no model.
class ScriptedDrafter final : public Drafter {
 public:
  // wrong_until > 0: wrong for context positions before it, right after.
  ScriptedDrafter(std::vector<int32_t> script, bool wrong, size_t wrong_until = 0)
      : script_(std::move(script)), wrong_(wrong), wrong_until_(wrong_until) {}
  std::string name() const override { return wrong_ ? "always wrong" : "oracle"; }
  Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) override {
    out.clear();
    for (size_t i = context.size(); i < script_.size() && static_cast<int>(out.size()) < max_tokens; ++i) {
      const bool wrong = wrong_until_ > 0 ? i < wrong_until_ : wrong_;
      out.push_back(wrong ? (script_[i] + 1) % 256 : script_[i]);
    }
    return Status::ok();
  }

 private:
  std::vector<int32_t> script_;
  bool wrong_;
  size_t wrong_until_;
};

TEST(Speculative, CostModelSwitchesALosingDrafterOffAndKeepsAWinningOne) {
  auto target = tiny("target", {});
  const auto prompt = prompts(target->config().n_vocab)[0];
  const int64_t n = 120;
  const auto expected = reference(target, prompt, n + 16);
  SpeculativeOptions options;
  options.draft_max = 8;
  // The costs of a bandwidth-bound target with a cheap drafter (c = 0.1, each extra verified row
  // 5% of a step), fixed so the decisions depend on acceptance only (on a tiny model a step's
  // time is noise: a wrong but free draft verified in the same time as one token costs nothing).
  options.assumed_draft_cost = 0.1;
  options.assumed_verify_slope = 0.05;
  // Always wrong: nothing is accepted; the cost model switches speculation off within a few
  // steps and only probes now and then (pause_tokens, doubling), so few verifications run.
  ScriptedDrafter wrong(expected, true);
  SpeculativeStats stats;
  EXPECT_EQ(speculative(target, &wrong, options, prompt, n, &stats), std::vector<int32_t>(expected.begin(), expected.end() - 16));
  EXPECT_EQ(stats.accepted, 0);
  EXPECT_GE(stats.switched_off, 1);
  EXPECT_GE(stats.probes, 1);
  EXPECT_LT(stats.verifications, 12);
  EXPECT_GT(stats.plain_steps, n - 12);
  // Always right and free: speculation stays on (a batched verification of k + 1 tokens costs less
  // than k + 1 plain steps), most tokens come from accepted drafts.
  ScriptedDrafter oracle(expected, false);
  EXPECT_EQ(speculative(target, &oracle, options, prompt, n, &stats), std::vector<int32_t>(expected.begin(), expected.end() - 16));
  EXPECT_GT(stats.accepted, n / 2);
  EXPECT_GT(stats.tokens_per_verification(), 2.0);
  // Wrong for 40 tokens, then right (a copy-heavy stretch starting): switched off, a probe sees
  // the change and speculation comes back for most of the remaining 80 tokens.
  ScriptedDrafter turning(expected, false, prompt.size() + 40);
  EXPECT_EQ(speculative(target, &turning, options, prompt, n, &stats), std::vector<int32_t>(expected.begin(), expected.end() - 16));
  EXPECT_GE(stats.switched_off, 1);
  EXPECT_GT(stats.accepted, 40);
  // Fixed length: the always-wrong drafter is verified at every step.
  options.adaptive = false;
  EXPECT_EQ(speculative(target, &wrong, options, prompt, n, &stats), std::vector<int32_t>(expected.begin(), expected.end() - 16));
  EXPECT_GE(stats.verifications, n - 1);
  EXPECT_EQ(stats.switched_off, 0);
}

TEST(Speculative, PromptAgreementAndWeightBytesAreTheCostModelsPriors) {
  auto target = tiny("target", {});
  testing::TinyModelOptions draft_options;
  draft_options.seed = 2;
  draft_options.n_layer = 1;
  auto other = tiny("draft", draft_options);
  const auto prompt = prompts(target->config().n_vocab)[4];  // 32 tokens
  ASSERT_GE(static_cast<int64_t>(prompt.size()), kMinAgreementRows + 1);
  const int64_t n = 24;
  const auto expected = reference(target, prompt, n);
  ModelDrafterOptions mo;
  mo.n_threads = 1;
  auto self = make_model_drafter(target, *target, mo);
  auto random_draft = make_model_drafter(other, *target, mo);
  mo.exit_layer = 1;
  auto early_exit = make_model_drafter(target, *target, mo);
  ASSERT_TRUE(self.is_ok() && random_draft.is_ok() && early_exit.is_ok());

  // The weight bytes a token reads, relative to the target's: the whole target 1, its first of two
  // blocks plus the head between the head's share and 1, a model of half the blocks below 1.
  EXPECT_DOUBLE_EQ((*self)->estimated_cost(*target), 1.0);
  const double head = static_cast<double>(target->output().rows) * static_cast<double>(target->output().row_bytes);
  const double early = (*early_exit)->estimated_cost(*target);
  EXPECT_GT(early, head / static_cast<double>(target->weight_bytes()));
  EXPECT_LT(early, 1.0);
  EXPECT_LT((*random_draft)->estimated_cost(*target), 1.0);

  // Fixed length: the prompt agreement is measured for every model drafter, 1 for the target
  // drafting for itself (batch-invariant rows: the same choices), less for a random model.
  SpeculativeOptions fixed;
  fixed.draft_max = 4;
  fixed.adaptive = false;
  SpeculativeStats stats;
  EXPECT_EQ(speculative(target, self->get(), fixed, prompt, n, &stats), expected);
  EXPECT_DOUBLE_EQ(stats.prompt_agreement, 1.0);
  EXPECT_EQ(speculative(target, random_draft->get(), fixed, prompt, n, &stats), expected);
  EXPECT_GE(stats.prompt_agreement, 0.0);
  EXPECT_LT(stats.prompt_agreement, 1.0);
  ScriptedDrafter oracle(expected, false);
  EXPECT_EQ(speculative(target, &oracle, fixed, prompt, n, &stats), expected);
  EXPECT_LT(stats.prompt_agreement, 0.0) << "a drafter without a model has no choices over the prompt";

  // Adaptive: a drafter that reads as many weight bytes as the target could not win even if every
  // draft were accepted, so it starts switched off (it does not even read the prompt) and is not
  // probed within kMaxProbeSpacing tokens.
  SpeculativeOptions adaptive;
  adaptive.draft_max = 4;
  EXPECT_EQ(speculative(target, self->get(), adaptive, prompt, n, &stats), expected);
  EXPECT_EQ(stats.switched_off, 1);
  EXPECT_EQ(stats.verifications, 0);
  EXPECT_EQ(stats.probes, 0);
  EXPECT_LT(stats.prompt_agreement, 0.0);
}

TEST(Speculative, LogitsKeptForABatchEqualThoseOfATransformerKeepingAll) {
  auto model = tiny("target", {});
  const auto prompt = prompts(model->config().n_vocab)[4];
  TransformerOptions all = target_options();
  TransformerOptions some = all;
  some.all_logits = false;
  some.kept_logit_rows = 16;
  Transformer a(model, all), b(model, some);
  const int64_t head = static_cast<int64_t>(prompt.size()) - 16;
  ASSERT_TRUE(a.evaluate(prompt.data(), head).is_ok());
  ASSERT_TRUE(b.evaluate(prompt.data(), head).is_ok());
  ASSERT_TRUE(a.evaluate(prompt.data() + head, 16).is_ok());
  ASSERT_TRUE(b.evaluate_keeping_logits(prompt.data() + head, 16).is_ok());
  const int64_t vocab = model->config().n_vocab;
  for (int64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(std::memcmp(a.logits(i), b.logits(i), static_cast<size_t>(vocab) * sizeof(float)), 0) << "row " << i;
  }
  // More rows than it has room for: refused with a message, not an overflow.
  const Status too_many = b.evaluate_keeping_logits(prompt.data(), 17);
  EXPECT_FALSE(too_many.is_ok());
  EXPECT_NE(too_many.message().find("at most 16"), std::string::npos) << too_many.message();
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

TEST(Speculative, BatchedVerificationRowsAreBitIdenticalToTheOneTokenPath) {
  // Batch-invariant kernels (speculative.h): a verification row's logits are the one-token path's
  // bits, whatever the weight type, so the verifier's argmax is plain greedy's without a margin.
  for (DType type : {DType::F32, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
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
    for (size_t i = split; i < tokens.size(); ++i) {
      ASSERT_TRUE(single.evaluate(&tokens[i], 1).is_ok());
      const float* a = single.last_logits();
      const float* b = batched.logits(static_cast<int64_t>(i) - split);
      EXPECT_EQ(0, std::memcmp(a, b, static_cast<size_t>(vocab) * sizeof(float))) << type_traits(type).name << " row " << i;
    }
  }
}

// Deterministic proposals (no distribution): another drafter's greedy drafts, so the decoder
// treats them as point masses (the path n-gram lookup takes in sampling mode).
class PointMassDrafter : public Drafter {
 public:
  explicit PointMassDrafter(Drafter* inner) : inner_(inner) {}
  std::string name() const override { return "point masses (" + inner_->name() + " greedy)"; }
  Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) override {
    return inner_->draft(context, max_tokens, out);
  }

 private:
  Drafter* inner_;
};

TEST(Speculative, SamplingFollowsTheTargetDistributionThroughTheDecoder) {
  // Speculative sampling end to end (draft, batched verification, rejection rule, rollback, bonus
  // token): the first three tokens' joint distribution is the target's, not the draft's, for a
  // draft model (the target exiting after one layer) and a deterministic drafter (point masses).
  auto target = tiny("target", {});
  const SamplerOptions o = testing::top_k_sampling(2, 11);
  const std::vector<int32_t> prompt = {72, 101, 108, 108, 111};
  const auto exact = testing::exact_three_token_distribution(target, target_options(), o, prompt);
  TransformerOptions early = target_options();
  early.exit_layer = 1;
  const auto draft_only = testing::exact_three_token_distribution(target, early, o, prompt);
  // The target's distribution moved 20% of the way toward the draft's.
  const auto perturbed = testing::mixture(exact, draft_only, 0.2);

  ModelDrafterOptions mo;
  mo.n_threads = 1;
  mo.p_min = 0;
  mo.exit_layer = 1;
  auto self = make_model_drafter(target, *target, mo);
  ASSERT_TRUE(self.is_ok());
  mo.exit_layer = 0;
  auto full = make_model_drafter(target, *target, mo);
  ASSERT_TRUE(full.is_ok());
  PointMassDrafter point(full->get());
  for (Drafter* drafter : {self->get(), static_cast<Drafter*>(&point)}) {
    SpeculativeOptions so;
    so.draft_max = 3;
    so.adaptive = false;
    so.sampling = o;
    Transformer t(target, target_options());
    SpeculativeDecoder decoder(t, drafter, so);
    testing::TokenDistribution counts;
    std::vector<double> tv;
    int64_t drafted = 0, accepted = 0;
    int done = 0;
    for (int limit : {400, 4000}) {
      for (; done < limit; ++done) {
        ASSERT_TRUE(decoder.start(prompt).is_ok());
        std::vector<int32_t> out;
        while (out.size() < 3) ASSERT_TRUE(decoder.step(out).is_ok());
        counts[{out[0], out[1], out[2]}] += 1;
        drafted += decoder.stats().drafted;
        accepted += decoder.stats().accepted;
      }
      tv.push_back(testing::total_variation(counts, done, exact));
    }
    const double to_draft = testing::total_variation(counts, done, draft_only), to_perturbed = testing::total_variation(counts, done, perturbed);
    std::printf("[ info ] %s: TV to the target %.4f (400 draws) -> %.4f (4000), to the draft %.4f, to 80/20 target/draft %.4f; "
                "acceptance %.2f\n", drafter->name().c_str(), tv[0], tv[1], to_draft, to_perturbed,
                static_cast<double>(accepted) / static_cast<double>(drafted));
    EXPECT_GT(drafted, accepted);  // rejections happen ...
    EXPECT_GT(accepted, 0);        // ... and so do acceptances
    EXPECT_LT(tv[1], tv[0]);       // the distance shrinks with samples (~ 1/sqrt(n)) ...
    EXPECT_LT(tv[1], 0.035);
    EXPECT_GT(to_draft, 4 * tv[1]);      // ... far below the distance to the draft's distribution
    EXPECT_GT(to_perturbed, 3 * tv[1]);  // ... and to the target moved 20% toward the draft
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
  EXPECT_NE(ok.err.find("timed before and after"), std::string::npos) << ok.err;  // no order advantage
  EXPECT_NE(ok.err.find("acceptance"), std::string::npos) << ok.err;
  auto refused = testing::run_command(base + " --draft " + testing::shell_quote(dir + "/other.gguf"));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("vocabulary"), std::string::npos) << refused.err;
  // Speculative sampling (--temp > 0) runs; a repetition penalty is refused with a message.
  const std::string sampled = base.substr(0, base.size() - 9) + " --temp 0.8 --seed 3 --draft ngram --draft-compare";
  auto sampling = testing::run_command(sampled);
  EXPECT_EQ(sampling.exit_code, 0) << sampling.err;
  EXPECT_NE(sampling.err.find("speculative sampling"), std::string::npos) << sampling.err;
  EXPECT_NE(sampling.err.find("plain sampling"), std::string::npos) << sampling.err;
  auto penalty = testing::run_command(sampled + " --repeat-penalty 1.1");
  EXPECT_NE(penalty.exit_code, 0);
  EXPECT_NE(penalty.err.find("--repeat-penalty"), std::string::npos) << penalty.err;
}

TEST(Speculative, BenchCommandReportsAcceptanceAndSpeedUpAgainstPlainDecoding) {
  const std::string dir = testing::temp_dir();
  ASSERT_TRUE(testing::write_tiny_model(dir + "/bench_target.gguf", {}).is_ok());
  const std::string base = testing::shell_quote(testing::frugal_binary()) + " bench -m " +
                           testing::shell_quote(dir + "/bench_target.gguf") + " -n 12 -r 1 -t 1";
  auto json = testing::run_command(base + " --lookup -o json");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto records = nlohmann::json::parse(json.out);
  ASSERT_EQ(records.size(), 5u);  // summarize, rewrite, edit-code, chat, story
  for (const auto& r : records) {
    EXPECT_EQ(r["drafter"], "lookup");
    EXPECT_TRUE(r["identical"].get<bool>()) << r.dump();
    EXPECT_GT(r["plain_ts"].get<double>(), 0);
    EXPECT_GT(r["speculative_ts"].get<double>(), 0);
    EXPECT_NEAR(r["speedup"].get<double>(), r["speculative_ts"].get<double>() / r["plain_ts"].get<double>(), 1e-9);
    const double drafted = r["drafted"].get<double>();
    EXPECT_NEAR(r["acceptance"].get<double>(), drafted > 0 ? r["accepted"].get<double>() / drafted : 0.0, 1e-12);
  }
  // The markdown table, the self-draft alias, and the refusals.
  auto md = testing::run_command(base + " --draft-self 1 --draft-max 3 --spec-prompts open");
  EXPECT_EQ(md.exit_code, 0) << md.err;
  EXPECT_NE(md.out.find("mean accepted length"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("open-ended: median speed-up"), std::string::npos) << md.out;
  EXPECT_EQ(md.out.find("copy-heavy |"), std::string::npos) << md.out;
  auto two = testing::run_command(base + " --lookup --draft-self 1");
  EXPECT_NE(two.exit_code, 0);
  EXPECT_NE(two.err.find("one drafter"), std::string::npos) << two.err;
  auto stray = testing::run_command(base + " --draft-max 3");
  EXPECT_NE(stray.exit_code, 0);
  EXPECT_NE(stray.err.find("applies only"), std::string::npos) << stray.err;
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
