// Real-model tests on SmolLM2-135M-Instruct Q4_1, with llama.cpp (built by
// scripts/build_llama_cpp.sh) as the reference: greedy text, token ids, logits, perplexity.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/test_support.h"
#include "support/tokenizer_parity.h"

namespace frugal {
namespace {

using testing::file_exists;
using testing::peer_tool;
using testing::real_model_path;
using testing::run_command;
using testing::shell_quote;

class SmolLm2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::load(real_model_path());
    if (m.is_ok()) model_ = m.value();
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    ASSERT_TRUE(model_ != nullptr) << "real model missing at " << real_model_path()
                                   << " (scripts/fetch_model.sh fetches it; scripts/test.sh runs everything)";
  }
  static void require_peer(const std::string& tool) {
    ASSERT_TRUE(file_exists(peer_tool(tool))) << peer_tool(tool) << " missing: run scripts/build_llama_cpp.sh";
  }
  static std::shared_ptr<const Model> model_;
};
std::shared_ptr<const Model> SmolLm2::model_;

TEST_F(SmolLm2, TokenIdsEqualLlamaTokenize) {
  require_peer("llama-tokenize");
  testing::expect_same_ids_as_llama_tokenize(model_->tokenizer(), real_model_path());
}

TEST_F(SmolLm2, FrugalTokenizeIdsMatchesLlamaTokenizeFormat) {
  require_peer("llama-tokenize");
  const std::string text = "Hello, world! It's 2024.";
  const auto ours = run_command(shell_quote(testing::frugal_binary()) + " tokenize -m " + shell_quote(real_model_path()) +
                                " -p " + shell_quote(text) + " --ids");
  const auto peer = run_command(shell_quote(peer_tool("llama-tokenize")) + " -m " + shell_quote(real_model_path()) +
                                " -p " + shell_quote(text) + " --ids --log-disable");
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  ASSERT_EQ(peer.exit_code, 0) << peer.err;
  EXPECT_EQ(ours.out, peer.out.substr(peer.out.rfind('[')));
}

TEST_F(SmolLm2, GreedyContinuationIsRightAndStable) {
  const std::string command = shell_quote(testing::frugal_binary()) + " run -m " + shell_quote(real_model_path()) +
                              " -p 'The capital of France is' -n 12 --temp 0 -t 2";
  const auto first = run_command(command);
  const auto second = run_command(command);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("Paris"), std::string::npos) << first.out;
  EXPECT_EQ(first.out, second.out);
  EXPECT_NE(first.err.find("tokens/s"), std::string::npos);
}

TEST_F(SmolLm2, LogitsMatchLlamaCpp) {
  require_peer("llama-logits");
  const std::vector<std::string> prompts = {
      "The capital of France is",
      "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
      "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
      "In 1905, Albert Einstein published four papers that changed physics. The first explained the photoelectric effect, "
      "the second Brownian motion, the third special relativity, and the fourth",
  };
  TransformerOptions options;
  options.n_ctx = 512;
  options.n_threads = 2;
  Transformer transformer(model_, options);
  const int64_t vocab = model_->config().n_vocab;
  double worst_overall = 0;
  for (const auto& prompt : prompts) {
    const auto ids = model_->tokenizer().encode(prompt, true, true);
    std::string list;
    for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
    const auto r = run_command(shell_quote(peer_tool("llama-logits")) + " " + shell_quote(real_model_path()) + " " + list);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<float> peer;
    std::istringstream in(r.out);
    for (float v; in >> v;) peer.push_back(v);
    ASSERT_EQ(static_cast<int64_t>(peer.size()), vocab);

    transformer.truncate(0);
    ASSERT_TRUE(transformer.evaluate(ids.data(), static_cast<int64_t>(ids.size())).is_ok());
    const float* ours = transformer.last_logits();
    double worst = 0, mean_shift = 0;
    int64_t ours_best = 0, peer_best = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      worst = std::max(worst, static_cast<double>(std::fabs(ours[v] - peer[v])));
      mean_shift += (ours[v] - peer[v]) / static_cast<double>(vocab);
      if (ours[v] > ours[ours_best]) ours_best = v;
      if (peer[v] > peer[peer_best]) peer_best = v;
    }
    // KL(peer || ours) of the next-token distributions, computed in double.
    auto log_softmax = [vocab](const float* logits) {
      double max = logits[0], sum = 0;
      for (int64_t v = 1; v < vocab; ++v) max = std::max(max, static_cast<double>(logits[v]));
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(logits[v] - max);
      std::vector<double> out(vocab);
      for (int64_t v = 0; v < vocab; ++v) out[v] = logits[v] - max - std::log(sum);
      return out;
    };
    const auto lp_peer = log_softmax(peer.data()), lp_ours = log_softmax(ours);
    double kl = 0;
    for (int64_t v = 0; v < vocab; ++v) kl += std::exp(lp_peer[v]) * (lp_peer[v] - lp_ours[v]);
    // Tolerance: this small model is sensitive to rounding. llama.cpp's own two attention paths
    // (flash attention on, its default here, accumulating in half precision; and off) differ on
    // the last prompt by max |dlogit| 0.77 and KL 0.006, and rounding activations to 8 bits moves
    // logits by up to 0.63. Stated bounds: max |logit difference| < 1.0, KL < 0.02 nats, and the
    // same top token.
    EXPECT_LT(worst, 1.0) << prompt;
    EXPECT_LT(kl, 0.02) << prompt;
    EXPECT_EQ(ours_best, peer_best) << prompt;
    std::printf("%-40.40s max |dlogit| %.4f (mean shift %+.4f), KL %.6f\n", prompt.c_str(), worst, mean_shift, kl);
    worst_overall = std::max(worst_overall, worst);
  }
  RecordProperty("max_abs_logit_difference", std::to_string(worst_overall));
  std::printf("largest |logit difference| vs llama.cpp over %zu prompts: %.4f\n", prompts.size(), worst_overall);
}

double final_estimate(const std::string& output) {
  std::smatch m;
  const std::regex pattern("Final estimate: PPL = ([0-9.]+)");
  if (!std::regex_search(output, m, pattern)) return -1;
  return std::stod(m[1]);
}

TEST_F(SmolLm2, PerplexityWithinOnePercentOfLlamaPerplexity) {
  require_peer("llama-perplexity");
  const std::string text = testing::data_path("wikitext2-test.txt");
  ASSERT_TRUE(file_exists(text)) << text;
  const std::string args = " -m " + shell_quote(real_model_path()) + " -f " + shell_quote(text) + " -c 512 --chunks 40 -t 2";
  const auto ours = run_command(shell_quote(testing::frugal_binary()) + " perplexity" + args);
  const auto peer = run_command(shell_quote(peer_tool("llama-perplexity")) + args);
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  ASSERT_EQ(peer.exit_code, 0) << peer.err;
  const double ppl = final_estimate(ours.out), peer_ppl = final_estimate(ours.out.empty() ? "" : peer.out + peer.err);
  ASSERT_GT(ppl, 1.0) << ours.out;
  ASSERT_GT(peer_ppl, 1.0) << peer.err;
  std::printf("perplexity, wikitext2-test, -c 512, 40 chunks: frugal %.4f, llama.cpp %.4f (%.3f%%)\n", ppl, peer_ppl,
              100.0 * (ppl - peer_ppl) / peer_ppl);
  EXPECT_LT(std::fabs(ppl - peer_ppl) / peer_ppl, 0.01);
  EXPECT_NE(ours.out.find("[40]"), std::string::npos);
}

}  // namespace
}  // namespace frugal
