// Real-model tests on Gemma 3 270M Q4_K_M (SentencePiece-style tokenizer, K-quant weights):
// token ids equal llama-tokenize's; the file's metadata and tensors parse.
#include <gtest/gtest.h>

#include <cmath>

#include "support/logits_parity.h"
#include "support/test_support.h"
#include "support/tokenizer_parity.h"

namespace frugal {
namespace {

std::string gemma_path() {
  if (const char* m = std::getenv("FRUGAL_GEMMA_MODEL"); m != nullptr && *m) return m;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/frugal/models/gemma-3-270m-q4_k_m.gguf";
}

TEST(Gemma3, TokenIdsEqualLlamaTokenize) {
  ASSERT_TRUE(testing::file_exists(gemma_path())) << gemma_path() << " missing: scripts/fetch_model.sh gemma3";
  ASSERT_TRUE(testing::file_exists(testing::peer_tool("llama-tokenize")));
  auto file = GgufFile::open(gemma_path());
  ASSERT_TRUE(file.is_ok()) << file.status().message();
  auto tokenizer = load_tokenizer(**file);
  ASSERT_TRUE(tokenizer.is_ok()) << tokenizer.status().message();
  EXPECT_EQ((*tokenizer)->vocab().model, "llama");
  testing::expect_same_ids_as_llama_tokenize(**tokenizer, gemma_path());
}

TEST(Gemma3, KQuantTensorsDecodeToFiniteValues) {
  ASSERT_TRUE(testing::file_exists(gemma_path()));
  auto file = GgufFile::open(gemma_path());
  ASSERT_TRUE(file.is_ok()) << file.status().message();
  int decoded = 0;
  for (const auto& t : (*file)->tensors()) {
    std::vector<float> row(t.dims[0]);
    t.traits->dequantize_row(t.data, row.data(), t.dims[0]);
    double sum = 0;
    for (float v : row) {
      ASSERT_TRUE(std::isfinite(v)) << t.name;
      sum += std::fabs(v);
    }
    EXPECT_GT(sum, 0) << t.name;
    ++decoded;
  }
  EXPECT_EQ(decoded, static_cast<int>((*file)->tensors().size()));
}

TEST(Gemma3, LogitsMatchLlamaCpp) {
  ASSERT_TRUE(testing::file_exists(testing::peer_tool("llama-logits")));
  auto model = Model::load(gemma_path());
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ(model.value()->config().architecture, "gemma3");
  const std::vector<std::string> prompts = {
      "The capital of France is",
      "<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n",
      "In 1905, Albert Einstein published four papers that changed physics. The first explained the photoelectric effect, "
      "the second Brownian motion",
  };
  testing::expect_logits_match_llama(model.value(), prompts);
}

TEST(Gemma3, SlidingWindowLayersFollowTheFivePlusOnePattern) {
  auto file = GgufFile::open(gemma_path());
  ASSERT_TRUE(file.is_ok());
  auto config = read_model_config(**file);
  ASSERT_TRUE(config.is_ok()) << config.status().message();
  EXPECT_EQ(config->sliding_window, 512);
  for (int64_t i = 0; i < config->n_layer; ++i) EXPECT_EQ(config->layer_is_windowed[i], i % 6 != 5) << i;
}

}  // namespace
}  // namespace frugal
