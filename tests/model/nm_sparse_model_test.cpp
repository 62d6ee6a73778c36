// N:M sparse formats end to end on a tiny model: `prune --pattern 2:4 --format nm-q8|nm-q4` and
// `quantize --format` of the dense pruned file write the same bytes and run close to the float
// pruned model; weights that are not N:M sparse are refused by name; a file whose masks break the
// pattern is refused by the loader with a message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>

#include "compress/prune_model.h"
#include "compress/quantize_model.h"
#include "io/gguf.h"
#include "io/gguf_names.h"
#include "model/model.h"
#include "model/transformer.h"
#include "support/test_support.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"

namespace frugal {
namespace {

// Logits of a short text: prefill of 4 tokens (the Q8_0-tile path), then one token at a time.
std::vector<float> logits_of(const std::string& path) {
  auto model = Model::load(path);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  if (!model.is_ok()) return {};
  TransformerOptions options;
  options.n_ctx = 32;
  options.n_batch = 8;
  Transformer t(*model, options);
  const std::vector<int32_t> tokens = {72, 101, 108, 108, 111, 32, 119, 111};
  std::vector<float> out;
  const int64_t vocab = (*model)->config().n_vocab;
  EXPECT_TRUE(t.evaluate(tokens.data(), 4).is_ok());
  out.insert(out.end(), t.last_logits(), t.last_logits() + vocab);
  for (size_t i = 4; i < tokens.size(); ++i) {
    EXPECT_TRUE(t.evaluate(&tokens[i], 1).is_ok());
    out.insert(out.end(), t.last_logits(), t.last_logits() + vocab);
  }
  return out;
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(err / norm);
}

TEST(NmSparseModel, PrunedTwoOfFourStoresRunsAndRefusesOtherData) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.n_ff = 128;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  PruneOptions prune;
  prune.method = "magnitude";
  prune.pattern = "2:4";
  prune.format = "f32";
  auto pruned = prune_model(in, dir + "/dense.gguf", prune, nullptr);
  ASSERT_TRUE(pruned.is_ok()) << pruned.status().message();
  const std::vector<float> ref = logits_of(dir + "/dense.gguf");
  for (int bits : {8, 4}) {
    const std::string format = "nm-q" + std::to_string(bits);
    prune.format = format;
    pruned = prune_model(in, dir + "/pruned_" + format + ".gguf", prune, nullptr);
    ASSERT_TRUE(pruned.is_ok()) << pruned.status().message();
    QuantizeOptions q;
    q.method = "rtn";
    q.format = format;
    auto report = quantize_model(dir + "/dense.gguf", dir + "/" + format + ".gguf", q, nullptr);
    ASSERT_TRUE(report.is_ok()) << report.status().message();
    auto a = GgufFile::open(dir + "/" + format + ".gguf");
    auto b = GgufFile::open(dir + "/pruned_" + format + ".gguf");
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    int matrices = 0;
    for (const GgufTensorInfo& t : (*a)->tensors()) {
      if (!names::parse_block_matrix(t.name)) continue;
      ++matrices;
      EXPECT_EQ(std::string(t.traits->name), "nm_q" + std::to_string(bits) + "_2of4") << t.name;
      const GgufTensorInfo* d = (*b)->find_tensor(t.name);
      ASSERT_NE(d, nullptr);
      ASSERT_EQ(d->bytes, t.bytes);
      EXPECT_TRUE(std::equal(t.data, t.data + t.bytes, d->data)) << t.name;
    }
    EXPECT_EQ(matrices, 2 * 7);
    const std::vector<float> got = logits_of(dir + "/" + format + ".gguf");
    ASSERT_EQ(got.size(), ref.size());
    ASSERT_FALSE(got.empty());
    // int8 / 4-bit rounding of the same pruned weights (4-bit about 16x coarser).
    EXPECT_LT(relative_error(got, ref), bits == 8 ? 0.03 : 0.25) << format;
  }
  // Unstructured 50% is not N:M: refused with the tensor's name and the reason.
  prune.pattern = "unstructured";
  prune.sparsity = 0.5;
  prune.format = "f32";
  ASSERT_TRUE(prune_model(in, dir + "/unstructured.gguf", prune, nullptr).is_ok());
  QuantizeOptions q;
  q.method = "rtn";
  q.format = "nm-q8";
  auto refused = quantize_model(dir + "/unstructured.gguf", dir + "/refused.gguf", q, nullptr);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("not 2:4 or 4:8 sparse"), std::string::npos) << refused.status().message();
  EXPECT_NE(refused.status().message().find("blk."), std::string::npos) << refused.status().message();
}

// SparseGPT into a sparse format prunes in float and lets the format encode the kept values: the
// file equals SparseGPT to f32 followed by `quantize --method rtn --format` of it, byte for byte
// (the joint prune-and-quantize sweep targets dense grids; it once refused sparse formats).
TEST(NmSparseModel, SparseGptWritesEverySparseFormat) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny_sparsegpt.gguf";
  testing::TinyModelOptions o;
  o.n_ff = 128;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  const std::string frugal = testing::shell_quote(testing::frugal_binary());
  auto run = [&](const std::string& args) {
    const auto r = testing::run_command(frugal + " " + args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
    return r.exit_code == 0;
  };
  for (const char* pattern : {"unstructured", "2:4"}) {
    const std::string prune = " prune -m " + testing::shell_quote(in) + " --method sparsegpt --calib-tokens 256 --pattern " + pattern +
                              (std::string(pattern) == "unstructured" ? " --sparsity 0.5" : "");
    const std::string dense = dir + "/sparsegpt_dense.gguf";
    ASSERT_TRUE(run(prune + " --format f32 -o " + testing::shell_quote(dense)));
    const std::vector<std::string> formats =
        std::string(pattern) == "2:4" ? std::vector<std::string>{"nm-q8", "nm-q4"} : std::vector<std::string>{"sparse-q8", "sparse-q4"};
    for (const std::string& format : formats) {
      SCOPED_TRACE(format);
      const std::string direct = dir + "/sparsegpt_" + format + ".gguf", via = dir + "/rtn_" + format + ".gguf";
      ASSERT_TRUE(run(prune + " --format " + format + " -o " + testing::shell_quote(direct)));
      ASSERT_TRUE(run("quantize -m " + testing::shell_quote(dense) + " --method rtn --format " + format + " -o " + testing::shell_quote(via)));
      auto a = GgufFile::open(direct);
      auto b = GgufFile::open(via);
      ASSERT_TRUE(a.is_ok() && b.is_ok());
      int matrices = 0;
      for (const GgufTensorInfo& t : (*a)->tensors()) {
        if (!names::parse_block_matrix(t.name)) continue;
        ++matrices;
        EXPECT_TRUE(is_bitmask_sparse(t.traits->type) || is_nm_sparse(t.traits->type)) << t.name;
        const GgufTensorInfo* d = (*b)->find_tensor(t.name);
        ASSERT_NE(d, nullptr);
        ASSERT_EQ(d->bytes, t.bytes) << t.name;
        EXPECT_TRUE(std::equal(t.data, t.data + t.bytes, d->data)) << t.name;
      }
      EXPECT_EQ(matrices, 2 * 7);
    }
  }
}

TEST(NmSparseModel, MasksBreakingThePatternAreRefused) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.n_ff = 128;
  o.n_layer = 1;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  PruneOptions prune;
  prune.method = "magnitude";
  prune.pattern = "2:4";
  prune.format = "nm-q4";
  ASSERT_TRUE(prune_model(in, dir + "/nm.gguf", prune, nullptr).is_ok());
  std::vector<char> bytes;
  std::string needle;
  {
    auto file = GgufFile::open(dir + "/nm.gguf");
    ASSERT_TRUE(file.is_ok()) << file.status().message();
    const GgufTensorInfo* t = (*file)->find_tensor("blk.0.ffn_up.weight");
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(is_nm_sparse(t->traits->type));
    needle.assign(reinterpret_cast<const char*>(t->data), 32);
    std::ifstream f(dir + "/nm.gguf", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto at = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  ASSERT_NE(at, bytes.end());
  *at = static_cast<char>(0xff);  // row 0, block 0: 4 of 4 in the first two groups
  std::ofstream(dir + "/bad.gguf", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto model = Model::load(dir + "/bad.gguf");
  ASSERT_FALSE(model.is_ok());
  EXPECT_NE(model.status().message().find("blk.0.ffn_up.weight"), std::string::npos) << model.status().message();
  EXPECT_NE(model.status().message().find("more than 2 mask bits set in the group of 4"), std::string::npos) << model.status().message();
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

// The fuzz seeds of the compact sparse formats (fuzz/seed_corpus.cpp: every matrix and the
// embedding stored in the format) load, pass validation and run.
TEST(NmSparseModel, FuzzSeedLayoutsLoadAndRun) {
  for (const DType type : {*sparse_q4_type(64), *nm_type(4, 2, 4)}) {
    const std::string dir = testing::temp_dir();
    testing::TinyModelOptions o;
    o.n_embd = 64, o.n_head = 2, o.n_head_kv = 1, o.n_ff = 64, o.n_layer = 1, o.n_ctx_train = 32;
    o.tied_output = true;
    o.weight_type = type;
    ASSERT_TRUE(testing::write_tiny_model(dir + "/seed.gguf", o).is_ok());
    const std::vector<float> logits = logits_of(dir + "/seed.gguf");
    ASSERT_FALSE(logits.empty()) << type_traits(type).name;
    for (float x : logits) ASSERT_TRUE(std::isfinite(x)) << type_traits(type).name;
  }
}

}  // namespace
}  // namespace frugal
