// Model tests of frugal prune on tiny random models the test writes: every method and pattern
// prunes each block matrix to exactly the asked sparsity, the file reloads and runs, storage types
// follow the rules of prune_model.h, joint SparseGPT + quantization, and bad input is refused
// without leaving an output file.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "compress/prune_model.h"
#include "io/gguf_names.h"
#include "support/test_support.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

std::string write_calibration_text(const std::string& path) {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "the theater on the sea, in the storm; the sailor sang of rain and wind. ";
  std::ofstream(path) << text;
  return text;
}

// Runs the pruned model over a few tokens; all logits must be finite.
void expect_runs(const std::string& path) {
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  TransformerOptions options;
  options.n_ctx = 32;
  options.n_batch = 8;
  Transformer t(*model, options);
  const std::vector<int32_t> tokens = {72, 101, 108, 108, 111, 32, 119, 111};
  ASSERT_TRUE(t.evaluate(tokens.data(), static_cast<int64_t>(tokens.size())).is_ok());
  for (int64_t i = 0; i < (*model)->config().n_vocab; ++i) ASSERT_TRUE(std::isfinite(t.last_logits()[i]));
}

struct Case {
  const char* name;
  const char* method;
  const char* pattern;
  double sparsity;
  bool gemma3;
};

class PruneModel : public ::testing::TestWithParam<Case> {};

TEST_P(PruneModel, ExactSparsityReloadsAndRuns) {
  const Case c = GetParam();
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/pruned.gguf";
  testing::TinyModelOptions o;
  o.gemma3 = c.gemma3;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  write_calibration_text(dir + "/calib.txt");
  PruneOptions options;
  options.method = c.method;
  options.pattern = c.pattern;
  options.sparsity = c.sparsity;
  options.calibration_path = dir + "/calib.txt";
  options.calibration_tokens = 512;
  options.sequence_length = 128;
  int64_t progress_calls = 0;
  auto report = prune_model(in, out, options, [&](int64_t, int64_t, const std::string&) { ++progress_calls; });
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_EQ(report->tensors_pruned, 7 * o.n_layer);
  EXPECT_GE(progress_calls, o.n_layer);
  expect_runs(out);

  auto base = GgufFile::open(in);
  auto pruned = GgufFile::open(out);
  ASSERT_TRUE(base.is_ok() && pruned.is_ok());
  EXPECT_EQ((*pruned)->get_string_or(names::kPruneMethodKey, ""), c.method);
  const auto pattern = compress::SparsityPattern::parse(c.pattern).value();
  bool changed = false;
  for (const GgufTensorInfo& t : (*pruned)->tensors()) {
    const GgufTensorInfo* original = (*base)->find_tensor(t.name);
    ASSERT_NE(original, nullptr);
    EXPECT_EQ(t.traits->type, DType::F32) << t.name;  // F32 stores 0 exactly: type kept
    if (!names::parse_block_matrix(t.name)) {
      // Everything outside the block matrices is copied.
      ASSERT_EQ(t.bytes, original->bytes);
      EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.bytes), std::vector<uint8_t>(original->data, original->data + original->bytes)) << t.name;
      continue;
    }
    const int64_t cols = t.dims[0], rows = t.dims[1];
    const float* v = reinterpret_cast<const float*>(t.data);
    const float* w = reinterpret_cast<const float*>(original->data);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t zeros = 0;
      for (int64_t j = 0; j < cols; ++j) {
        zeros += v[r * cols + j] == 0.0f;
        // Without an update, every weight is either kept exactly or zeroed.
        if (std::string(c.method) != "sparsegpt") {
          ASSERT_TRUE(v[r * cols + j] == 0.0f || v[r * cols + j] == w[r * cols + j]);
        }
        changed |= v[r * cols + j] != 0.0f && v[r * cols + j] != w[r * cols + j];
      }
      if (pattern.is_n_m()) {
        for (int64_t g = 0; g < cols; g += pattern.m) {
          int z = 0;
          for (int j = 0; j < pattern.m; ++j) z += v[r * cols + g + j] == 0.0f;
          ASSERT_EQ(z, pattern.n) << t.name << " row " << r;
        }
      } else if (std::string(c.method) != "sparsegpt") {
        ASSERT_EQ(zeros, std::llround(c.sparsity * cols)) << t.name << " row " << r;  // per row
      }
    }
    if (std::string(c.method) == "sparsegpt" && !pattern.is_n_m()) {
      // Chosen per 128-column block over all rows: exact per block.
      const int64_t zeros = count_zeros(t);
      int64_t expected = 0;
      for (int64_t b = 0; b < cols; b += 128) expected += std::llround(c.sparsity * rows * std::min<int64_t>(128, cols - b));
      EXPECT_EQ(zeros, expected) << t.name;
    }
  }
  // SparseGPT updates the weights it keeps.
  EXPECT_EQ(changed, std::string(c.method) == "sparsegpt");
}

INSTANTIATE_TEST_SUITE_P(Methods, PruneModel,
                         ::testing::Values(Case{"magnitude_50", "magnitude", "unstructured", 0.5, false},
                                           Case{"magnitude_2_4", "magnitude", "2:4", -1.0, false},
                                           Case{"wanda_30", "wanda", "unstructured", 0.3, false},
                                           Case{"wanda_4_8", "wanda", "4:8", 0.5, false},
                                           Case{"sparsegpt_50", "sparsegpt", "unstructured", 0.5, false},
                                           Case{"sparsegpt_2_4", "sparsegpt", "2:4", -1.0, false},
                                           Case{"sparsegpt_60_gemma3", "sparsegpt", "unstructured", 0.6, true},
                                           Case{"wanda_2_4_gemma3", "wanda", "2:4", 0.5, true}),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(PruneModelStorage, InexactZeroTypesBecomeQ8AndJointModeQuantizes) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.weight_type = DType::Q4_1;  // its block minimum makes 0 inexact
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  write_calibration_text(dir + "/calib.txt");
  PruneOptions options;
  options.method = "wanda";
  options.sparsity = 0.5;
  options.calibration_path = dir + "/calib.txt";
  options.calibration_tokens = 512;
  options.sequence_length = 128;
  auto report = prune_model(in, dir + "/q8.gguf", options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_EQ(report->zeros, report->weights_in_pruned / 2);
  auto q8 = GgufFile::open(dir + "/q8.gguf");
  ASSERT_TRUE(q8.is_ok());
  EXPECT_EQ((*q8)->find_tensor("blk.0.ffn_up.weight")->traits->type, DType::Q8_0);
  EXPECT_EQ((*q8)->find_tensor(names::kTokenEmbedding)->traits->type, DType::Q4_1);  // not a block matrix: copied
  EXPECT_EQ((*q8)->find(names::kFileTypeKey), nullptr);
  expect_runs(dir + "/q8.gguf");

  // SparseGPT 50% + 4-bit symmetric (q4_0) in one sweep: at least half of every matrix is zero.
  options.method = "sparsegpt";
  options.bits = 4;
  options.group = 32;
  options.symmetric = true;
  report = prune_model(in, dir + "/joint.gguf", options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_GE(report->zeros, report->weights_in_pruned / 2);
  auto joint = GgufFile::open(dir + "/joint.gguf");
  ASSERT_TRUE(joint.is_ok());
  for (const GgufTensorInfo& t : (*joint)->tensors()) {
    if (!names::parse_block_matrix(t.name)) continue;
    EXPECT_EQ(t.traits->type, DType::Q4_0) << t.name;
    EXPECT_GE(count_zeros(t), t.element_count() / 2) << t.name;
  }
  expect_runs(dir + "/joint.gguf");
}

TEST(PruneBadInput, RefusedWithAMessageAndNoOutput) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/out.gguf";
  ASSERT_TRUE(testing::write_tiny_model(in, {}).is_ok());
  write_calibration_text(dir + "/calib.txt");
  std::ofstream(dir + "/short.txt") << "hi";
  const std::string frugal = shell_quote(testing::frugal_binary()) + " prune -m " + shell_quote(in) + " -o " + shell_quote(out) +
                             " --calib " + shell_quote(dir + "/calib.txt") + " --calib-tokens 256";
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {" --method magnitude --sparsity 1.5", "--sparsity"},
      {" --method magnitude --sparsity 1", "sparsity must be in [0, 1)"},
      {" --method magnitude", "--sparsity is needed"},
      {" --method pluck --sparsity 0.5", "unknown pruning method 'pluck' (choose one of: magnitude, wanda, sparsegpt, layers, width, heads)"},
      {" --sparsity 0.5", "prune needs --method"},
      {" --method wanda --pattern 3:3", "N:M needs 0 < N < M"},
      {" --method wanda --pattern 2:x", "is not unstructured or N:M"},
      {" --method wanda --pattern 2:4 --sparsity 0.3", "impossible"},
      {" --method wanda --pattern 5:64", "multiple of 64"},
      {" --method wanda --sparsity 0.5 --bits 4", "sparsegpt only"},
      {" --method sparsegpt --sparsity 0.5 --bits 9", "--bits"},
      {" --method sparsegpt --sparsity 0.5 --format q9_9", "unknown format 'q9_9'"},
      {" --method sparsegpt --sparsity 0.5 --bits 4 --format q4_0", "exclude each other"},
      {" --method sparsegpt --sparsity 0.5 --calib " + shell_quote(dir + "/none.txt"), "none.txt"},
      {" --method magnitude --sparsity 0.5 --frobnicate", "--frobnicate"},
      {" --method wanda --sparsity 0.5 --calib " + shell_quote(dir + "/short.txt"), "at least 16 needed"},
  };
  for (const auto& c : cases) {
    const auto r = run_command(frugal + c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_FALSE(testing::file_exists(out)) << c.args;
  }
  const auto same = run_command(shell_quote(testing::frugal_binary()) + " prune -m " + shell_quote(in) + " -o " + shell_quote(in) +
                                " --method magnitude --sparsity 0.5");
  EXPECT_EQ(same.exit_code, 1);
  EXPECT_NE(same.err.find("output must differ"), std::string::npos) << same.err;
  const auto missing = run_command(shell_quote(testing::frugal_binary()) + " prune -m " + shell_quote(dir + "/none.gguf") + " -o " +
                                   shell_quote(out) + " --method magnitude --sparsity 0.5");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_FALSE(testing::file_exists(out));

  // Per-layer sparsities must match the layer count.
  PruneOptions options;
  options.method = "magnitude";
  options.layer_sparsity = {0.5, 0.5, 0.5};
  auto wrong = prune_model(in, out, options, nullptr);
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_NE(wrong.status().message().find("3 per-layer sparsities for a model of 2 layers"), std::string::npos);
  EXPECT_FALSE(testing::file_exists(out));

  // A good run, and info reports the zeros per tensor.
  const auto good = run_command(frugal + " --method magnitude --sparsity 0.25");
  ASSERT_EQ(good.exit_code, 0) << good.err;
  const auto info = run_command(shell_quote(testing::frugal_binary()) + " info " + shell_quote(out));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("blk.1.ffn_down.weight"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("( 25.0% sparse, "), std::string::npos) << info.out;  // then the bpw as stored
  EXPECT_NE(info.out.find("pruned:"), std::string::npos) << info.out;
}

TEST(PruneModel, PerLayerSparsity) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/out.gguf";
  ASSERT_TRUE(testing::write_tiny_model(in, {}).is_ok());
  PruneOptions options;
  options.method = "magnitude";
  options.layer_sparsity = {0.25, 0.75};
  auto report = prune_model(in, out, options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  auto f = GgufFile::open(out);
  ASSERT_TRUE(f.is_ok());
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    const auto block = names::parse_block_matrix(t.name);
    if (!block) continue;
    EXPECT_EQ(count_zeros(t), std::llround((block->first == 0 ? 0.25 : 0.75) * t.dims[0]) * t.dims[1]) << t.name;
  }
}

}  // namespace
}  // namespace frugal
