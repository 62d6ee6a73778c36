// Files frugal quantize writes in llama.cpp types load and run in llama.cpp: every uniform llama
// layout (round-to-nearest), SmoothQuant's rescaled norms with q8_0 rows, and a mixed layout
// copied with --types-from. llama.cpp must pick the same next token as frugal on the same file.
#include <gtest/gtest.h>

#include "compress/quantize_model.h"
#include "support/logits_parity.h"
#include "support/test_support.h"

namespace frugal {
namespace {

using testing::file_exists;
using testing::peer_tool;
using testing::real_model_path;

void expect_llama_runs(const std::string& path, const std::string& what) {
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok()) << what << ": " << model.status().message();
  const auto r = testing::compare_last_logits_with_llama(model.value(), "The capital of France is");
  std::printf("%-28s frugal vs llama.cpp: top %lld / %lld, KL %.4f nats\n", what.c_str(), static_cast<long long>(r.our_top),
              static_cast<long long>(r.peer_top), r.kl);
  EXPECT_GE(r.peer_top, 0) << what << ": llama.cpp did not run the file";
  EXPECT_EQ(r.our_top, r.peer_top) << what;
  // The same weights in both engines: only activation rounding differs (per-token int8 in frugal
  // for SmoothQuant files, per-block in llama.cpp), so the distributions stay close.
  EXPECT_LT(r.kl, 0.05) << what;
}

TEST(QuantizedFiles, LoadAndRunInLlamaCpp) {
  ASSERT_TRUE(file_exists(peer_tool("llama-logits"))) << "run scripts/build_llama_cpp.sh";
  ASSERT_TRUE(file_exists(real_model_path())) << real_model_path();
  const std::string dir = testing::temp_dir();
  for (const char* format : {"q8_0", "q6_K", "q5_1", "q5_0", "q5_K", "q4_1", "q4_0", "q4_K", "q3_K", "q2_K"}) {
    QuantizeOptions options;
    options.format = format;
    const std::string out = dir + "/" + format + ".gguf";
    auto report = quantize_model(real_model_path(), out, options, nullptr);
    ASSERT_TRUE(report.is_ok()) << format << ": " << report.status().message();
    expect_llama_runs(out, std::string("rtn ") + format);
  }
  QuantizeOptions smooth;
  smooth.method = "smoothquant";
  smooth.bits = 8;
  smooth.calibration_path = testing::data_path("tinyshakespeare.txt");
  smooth.calibration_tokens = 512;
  ASSERT_TRUE(quantize_model(real_model_path(), dir + "/smoothquant.gguf", smooth, nullptr).is_ok());
  expect_llama_runs(dir + "/smoothquant.gguf", "smoothquant (q8_0)");
  // A mixed layout: q3_K's file (q4_0 on 576-wide rows) as the type source for GPTQ.
  QuantizeOptions mixed;
  mixed.method = "gptq";
  mixed.types_from = dir + "/q3_K.gguf";
  mixed.calibration_path = smooth.calibration_path;
  mixed.calibration_tokens = 512;
  ASSERT_TRUE(quantize_model(real_model_path(), dir + "/gptq_mixed.gguf", mixed, nullptr).is_ok());
  expect_llama_runs(dir + "/gptq_mixed.gguf", "gptq, types of q3_K file");
}

}  // namespace
}  // namespace frugal
