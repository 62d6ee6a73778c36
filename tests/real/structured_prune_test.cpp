// Structured pruning of SmolLM2 writes ordinary GGUF files: llama.cpp loads the model with blocks
// removed (renumbered, block_count updated), the one with a narrower FFN (feed_forward_length
// updated, down projection re-encoded) and the one with a KV group fewer (head counts and head size
// written, attn_output re-encoded), and its logits match frugal's on the same file.
#include <gtest/gtest.h>

#include "compress/structured_prune.h"
#include "support/logits_parity.h"
#include "support/test_support.h"

namespace frugal {
namespace {

using testing::file_exists;
using testing::peer_tool;
using testing::real_model_path;

std::shared_ptr<const Model> prune(const std::string& method, double sparsity, const std::string& out) {
  StructuredPruneOptions options;
  options.method = method;
  options.sparsity = sparsity;
  options.calibration_path = testing::data_path("tinyshakespeare.txt");
  options.calibration_tokens = 1024;
  auto report = structured_prune_model(real_model_path(), out, options, nullptr);
  EXPECT_TRUE(report.is_ok()) << method << ": " << report.status().message();
  if (!report.is_ok()) return nullptr;
  EXPECT_LT(report->parameters_after, report->parameters_before);
  auto model = Model::load(out);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  return model.is_ok() ? model.value() : nullptr;
}

// The prompts of the unpruned model's parity test (tests/real/smollm2_test.cpp).
const std::vector<std::string> kPrompts = {
    "The capital of France is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1905, Albert Einstein published four papers that changed physics. The first explained the photoelectric effect, "
    "the second Brownian motion, the third special relativity, and the fourth",
};

TEST(StructuredPruneReal, LayerPrunedFileMatchesLlamaCpp) {
  ASSERT_TRUE(file_exists(peer_tool("llama-logits"))) << "run scripts/build_llama_cpp.sh";
  ASSERT_TRUE(file_exists(real_model_path())) << real_model_path();
  const std::string out = testing::temp_dir() + "/layers20.gguf";
  auto model = prune("layers", 0.2, out);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().n_layer, 24);  // 30 blocks, 6 removed
  testing::expect_logits_match_llama(model, kPrompts);
}

TEST(StructuredPruneReal, WidthPrunedFileMatchesLlamaCpp) {
  ASSERT_TRUE(file_exists(peer_tool("llama-logits"))) << "run scripts/build_llama_cpp.sh";
  ASSERT_TRUE(file_exists(real_model_path())) << real_model_path();
  const std::string out = testing::temp_dir() + "/width20.gguf";
  auto model = prune("width", 0.2, out);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().n_ff, 1216);
  testing::expect_logits_match_llama(model, kPrompts);
}

TEST(StructuredPruneReal, HeadPrunedFileMatchesLlamaCpp) {
  ASSERT_TRUE(file_exists(peer_tool("llama-logits"))) << "run scripts/build_llama_cpp.sh";
  ASSERT_TRUE(file_exists(real_model_path())) << real_model_path();
  const std::string out = testing::temp_dir() + "/heads33.gguf";
  auto model = prune("heads", 0.33, out);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().n_head, 6);  // one of 3 KV groups (3 query heads each) removed
  EXPECT_EQ(model->config().n_head_kv, 2);
  EXPECT_EQ(model->config().head_dim, 64);
  testing::expect_logits_match_llama(model, kPrompts);
}

}  // namespace
}  // namespace frugal
