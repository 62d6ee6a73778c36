// Real-model tests on SmolLM2-135M-Instruct Q4_1, with llama.cpp (built by
// scripts/build_llama_cpp.sh) as the reference: greedy text, token ids, logits, perplexity.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/logits_parity.h"
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

// SmolLM2 has no token for the control bytes 0x04, 0x06, 0x13, 0x14, 0x16 and 0x1D, and names
// <|endoftext|> as its unknown token; llama.cpp drops such bytes (found by tokenizer_fuzzer).
TEST_F(SmolLm2, BytesWithoutATokenAreDroppedLikeLlamaTokenize) {
  require_peer("llama-tokenize");
  const std::string text = "a\x1d" "b\x04" "c fnr\x1d\x13\x14\x16 end\x06";
  const std::string path = testing::temp_dir() + "/control.txt";
  std::ofstream(path, std::ios::binary) << text;
  const auto peer = run_command(shell_quote(peer_tool("llama-tokenize")) + " -m " + shell_quote(real_model_path()) +
                                " -f " + shell_quote(path) + " --ids --log-disable");
  ASSERT_EQ(peer.exit_code, 0) << peer.err;
  const std::vector<int32_t> ids = model_->tokenizer().encode(text, true, true);
  std::string ours = "[";
  for (size_t k = 0; k < ids.size(); ++k) ours += (k ? ", " : "") + std::to_string(ids[k]);
  EXPECT_EQ(ours + "]", peer.out.substr(peer.out.rfind('['), peer.out.rfind(']') - peer.out.rfind('[') + 1));
  EXPECT_EQ(model_->tokenizer().decode(ids), "abc fnr end");
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

TEST_F(SmolLm2, ChatHoldsAMultiTurnConversation) {
  // Two user turns on stdin; the second only makes sense with the first in the context. A system
  // prompt of our own: with the model's default one (its template adds "You are a helpful AI
  // assistant named SmolLM...") this 135M Q4_1 model answers in French, greedily, exactly as
  // llama-simple does for the same prompt.
  const std::string command = "printf 'What is the capital of France?\\nAnd of Germany?\\n' | " +
                              shell_quote(testing::frugal_binary()) + " run -m " + shell_quote(real_model_path()) +
                              " --chat -n 24 --temp 0 -t 2 --system 'You are a helpful assistant.'";
  const std::string dir = testing::temp_dir();
  const int status = std::system((command + " > " + dir + "/out 2> " + dir + "/err").c_str());
  ASSERT_EQ(status, 0);
  std::ifstream in(dir + "/out");
  const std::string out((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(out.find("Paris"), std::string::npos) << out;
  EXPECT_NE(out.find("Berlin"), std::string::npos) << out;
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
  testing::expect_logits_match_llama(model_, prompts);
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

namespace frugal {
namespace {

TEST_F(SmolLm2, HellaswagAccuracyEqualsLlamaPerplexity) {
  require_peer("llama-perplexity");
  // The first 50 tasks, so both tools score the same set (llama.cpp shuffles the order only).
  auto raw = read_text_file(testing::data_path("hellaswag-val.txt.bz2"));
  ASSERT_TRUE(raw.is_ok()) << raw.status().message();
  std::string subset;
  size_t pos = 0;
  for (int line = 0; line < 50 * 6; ++line) {
    const size_t end = raw->find('\n', pos);
    subset += raw->substr(pos, end - pos + 1);
    pos = end + 1;
  }
  const std::string path = testing::temp_dir() + "/hellaswag50.txt";
  std::ofstream(path, std::ios::binary) << subset;
  auto tasks = parse_hellaswag(subset);
  ASSERT_TRUE(tasks.is_ok());
  TransformerOptions options;
  options.n_ctx = 512;
  options.all_logits = true;
  Transformer transformer(model_, options);
  auto ours = hellaswag_accuracy(transformer, *tasks, -1, nullptr);
  ASSERT_TRUE(ours.is_ok()) << ours.status().message();

  const auto peer = run_command(shell_quote(peer_tool("llama-perplexity")) + " -m " + shell_quote(real_model_path()) + " -f " +
                                shell_quote(path) + " --hellaswag --hellaswag-tasks 50 -t 2");
  ASSERT_EQ(peer.exit_code, 0) << peer.err;
  std::smatch m;
  const std::string all = peer.out + peer.err;
  ASSERT_TRUE(std::regex_search(all, m, std::regex("\\n50\\s+([0-9.]+)%"))) << all.substr(all.size() > 2000 ? all.size() - 2000 : 0);
  const double peer_accuracy = std::stod(m[1]);
  std::printf("HellaSwag, first 50 tasks: frugal %.2f%%, llama.cpp %.2f%%\n", ours->accuracy_pct(), peer_accuracy);
  // Both pick the ending with the best mean log-likelihood; rounding may flip at most one close call.
  EXPECT_LE(std::fabs(ours->accuracy_pct() - peer_accuracy), 2.0 + 1e-9);
}

}  // namespace
}  // namespace frugal
