// `frugal quantize MODEL PRESET` against llama-quantize on the real SmolLM2 file: the same type for
// every tensor (576-wide rows, so the K-quant fallbacks and the q8_0 tied output head are exercised).
#include <gtest/gtest.h>

#include "io/gguf.h"
#include "support/test_support.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

TEST(QuantizePresetsReal, SameTensorTypesAsLlamaQuantize) {
  const std::string model = testing::real_model_path();
  const std::string peer = testing::peer_tool("llama-quantize");
  if (!testing::file_exists(model)) GTEST_SKIP() << "real model missing at " << model;
  if (!testing::file_exists(peer)) GTEST_SKIP() << "llama-quantize not built (FRUGAL_PEER_BIN)";
  const std::string dir = testing::temp_dir();
  for (const char* preset : {"Q4_K_M", "Q3_K_M", "Q6_K"}) {
    const std::string theirs = dir + "/llama.gguf", ours = dir + "/frugal.gguf";
    const auto p = run_command(shell_quote(peer) + " --allow-requantize " + shell_quote(model) + " " + shell_quote(theirs) + " " +
                               preset + " 2");
    ASSERT_EQ(p.exit_code, 0) << preset << "\n" << p.err;
    const auto f = run_command(shell_quote(testing::frugal_binary()) + " quantize " + shell_quote(model) + " " + preset + " -o " +
                               shell_quote(ours) + " -t 2");
    ASSERT_EQ(f.exit_code, 0) << preset << "\n" << f.err;
    auto a = GgufFile::open(theirs);
    auto b = GgufFile::open(ours);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    ASSERT_EQ((*a)->tensors().size(), (*b)->tensors().size());
    int differing = 0;
    for (const GgufTensorInfo& t : (*a)->tensors()) {
      const GgufTensorInfo* mine = (*b)->find_tensor(t.name);
      ASSERT_NE(mine, nullptr) << t.name;
      if (mine->type_id != t.type_id) {
        ++differing;
        ADD_FAILURE() << preset << " " << t.name << ": llama-quantize " << t.traits->name << ", frugal " << mine->traits->name;
      }
    }
    EXPECT_EQ(differing, 0) << preset;
  }
}

}  // namespace
}  // namespace frugal
