// frugal quantize (gptq, awq) and frugal prune (sparsegpt, alone and joint with 4-bit) write the
// same file bytes whatever the thread count: the compressors split rows over the calibration
// pass's threads (compress/parallel.h) without changing any result.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "compress/prune_model.h"
#include "compress/quantize_model.h"
#include "support/test_support.h"

namespace frugal {
namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class CompressThreadsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    in_ = dir_ + "/tiny.gguf";
    testing::TinyModelOptions o;
    o.n_embd = 256;  // a whole K-quant block per row
    o.n_ff = 512;
    ASSERT_TRUE(testing::write_tiny_model(in_, o).is_ok());
    std::string text;
    for (int i = 0; i < 120; ++i) text += "the theater on the sea, in the storm; the sailor sang. ";
    std::ofstream(dir_ + "/calib.txt") << text;
  }
  std::string dir_, in_;
};

TEST_F(CompressThreadsFile, QuantizeWritesTheSameBytesForAnyThreadCount) {
  for (const char* method : {"gptq", "awq"}) {
    SCOPED_TRACE(method);
    std::string first;
    for (int threads : {1, 3}) {
      QuantizeOptions options;
      options.method = method;
      options.format = "q4_k";
      options.calibration_path = dir_ + "/calib.txt";
      options.calibration_tokens = 256;
      options.n_threads = threads;
      const std::string out = dir_ + "/" + method + std::to_string(threads) + ".gguf";
      auto report = quantize_model(in_, out, options, nullptr);
      ASSERT_TRUE(report.is_ok()) << report.status().message();
      const std::string bytes = file_bytes(out);
      ASSERT_GT(bytes.size(), 1000u);
      if (threads == 1) {
        first = bytes;
      } else {
        EXPECT_TRUE(bytes == first) << threads << " threads changed the file";
      }
    }
  }
}

TEST_F(CompressThreadsFile, SparseGptWritesTheSameBytesForAnyThreadCount) {
  for (int bits : {0, 4}) {
    SCOPED_TRACE(bits);
    std::string first;
    for (int threads : {1, 3}) {
      PruneOptions options;
      options.method = "sparsegpt";
      options.sparsity = 0.5;
      options.bits = bits;
      if (bits != 0) {
        options.group = 32;
        options.symmetric = true;
      }
      options.calibration_path = dir_ + "/calib.txt";
      options.calibration_tokens = 512;
      options.sequence_length = 128;
      options.n_threads = threads;
      const std::string out = dir_ + "/sparsegpt" + std::to_string(bits) + "_" + std::to_string(threads) + ".gguf";
      auto report = prune_model(in_, out, options, nullptr);
      ASSERT_TRUE(report.is_ok()) << report.status().message();
      EXPECT_GE(report->zeros, report->weights_in_pruned / 2);
      const std::string bytes = file_bytes(out);
      ASSERT_GT(bytes.size(), 1000u);
      if (threads == 1) {
        first = bytes;
      } else {
        EXPECT_TRUE(bytes == first) << threads << " threads changed the file";
      }
    }
  }
}

}  // namespace
}  // namespace frugal
