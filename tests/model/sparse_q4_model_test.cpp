// sparse-q4 end to end on a tiny model: `prune --format sparse-q4` and `quantize --format
// sparse-q4` of the dense pruned file write the same bytes, reload, decode to the pruned values
// within 4-bit rounding, and run about as close to the float pruned model as Q4_0 of the same
// weights; a file whose masks promise more codes than its rows hold is refused with a message.
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
#include "tensor/sparse_q4.h"

namespace frugal {
namespace {

// Logits of every position of a short text: prefill of 4 tokens in one batch (the Q8_0-tile
// path), then one token at a time (the decode kernel).
std::vector<float> logits_of(const std::string& path) {
  auto model = Model::load(path);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  if (!model.is_ok()) return {};
  TransformerOptions options;
  options.n_ctx = 32;
  options.n_batch = 8;
  Transformer t(*model, options);
  const std::vector<int32_t> tokens = {72, 101, 108, 108, 111, 32, 119, 111, 114, 108};
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

std::vector<float> dequantized(const GgufTensorInfo& t) {
  const int64_t cols = t.dims[0], rows = t.element_count() / cols;
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) t.traits->dequantize_row(t.data + r * row_bytes(*t.traits, cols), v.data() + r * cols, cols);
  return v;
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(err / norm);
}

TEST(SparseQ4Model, PrunedSparseReloadsDecodesAndRunsLikeQ4_0) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.n_ff = 128;  // rows of a multiple of 64 (the sparse-q4 block)
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  PruneOptions prune;
  prune.method = "magnitude";
  prune.sparsity = 0.5;
  prune.format = "f32";
  auto pruned = prune_model(in, dir + "/dense.gguf", prune, nullptr);
  ASSERT_TRUE(pruned.is_ok()) << pruned.status().message();
  prune.format = "sparse-q4";
  pruned = prune_model(in, dir + "/pruned_sparse.gguf", prune, nullptr);
  ASSERT_TRUE(pruned.is_ok()) << pruned.status().message();

  QuantizeOptions q;
  q.method = "rtn";
  q.format = "sparse-q4";
  auto report = quantize_model(dir + "/dense.gguf", dir + "/sparse.gguf", q, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  q.format = "q4_0";
  ASSERT_TRUE(quantize_model(dir + "/dense.gguf", dir + "/q4.gguf", q, nullptr).is_ok());

  auto dense = GgufFile::open(dir + "/dense.gguf");
  auto sparse = GgufFile::open(dir + "/sparse.gguf");
  auto direct = GgufFile::open(dir + "/pruned_sparse.gguf");
  auto q4 = GgufFile::open(dir + "/q4.gguf");
  ASSERT_TRUE(dense.is_ok() && sparse.is_ok() && direct.is_ok() && q4.is_ok());
  int matrices = 0;
  for (const GgufTensorInfo& t : (*sparse)->tensors()) {
    if (!names::parse_block_matrix(t.name)) continue;
    ++matrices;
    // Half of every matrix pruned: 32 codes per 64 weights plus the pad nibbles of odd blocks.
    const int c = sparse_q4_capacity(t.traits->type);
    EXPECT_GE(c, 32) << t.name;
    EXPECT_LE(c, 44) << t.name;
    const GgufTensorInfo* d = (*direct)->find_tensor(t.name);
    ASSERT_NE(d, nullptr);
    ASSERT_EQ(d->bytes, t.bytes);
    EXPECT_TRUE(std::equal(t.data, t.data + t.bytes, d->data)) << t.name;
    const std::vector<float> want = dequantized(*(*dense)->find_tensor(t.name));
    const std::vector<float> got = dequantized(t);
    const float amax = std::fabs(*std::max_element(want.begin(), want.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); }));
    for (size_t i = 0; i < want.size(); ++i) {
      // A pruned zero stays zero; a kept weight may round to zero (then its mask bit is clear).
      if (want[i] == 0.0f) {
        ASSERT_EQ(got[i], 0.0f) << t.name << " " << i;
      }
      ASSERT_NEAR(got[i], want[i], amax / 14.0f * 1.01f) << t.name << " " << i;
    }
  }
  EXPECT_EQ(matrices, 2 * 7);
  EXPECT_LT((*sparse)->file_size(), (*q4)->file_size());

  const std::vector<float> a = logits_of(dir + "/sparse.gguf");
  const std::vector<float> b = logits_of(dir + "/q4.gguf");
  const std::vector<float> ref = logits_of(dir + "/dense.gguf");
  ASSERT_EQ(a.size(), ref.size());
  ASSERT_EQ(b.size(), ref.size());
  ASSERT_FALSE(a.empty());
  for (float x : a) ASSERT_TRUE(std::isfinite(x));
  // sparse-q4 spends its 4 bits on the kept weights only (one scale per 64 of them), Q4_0 on all
  // (one per 32): both are 4-bit roundings of the same pruned weights.
  const double e_sparse = relative_error(a, ref), e_q4 = relative_error(b, ref);
  EXPECT_LT(e_sparse, 1.5 * e_q4 + 0.01) << e_sparse << " vs q4_0 " << e_q4;
  EXPECT_LT(e_sparse, 0.2);
}

TEST(SparseQ4Model, MasksPromisingMoreCodesThanStoredAreRefused) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.n_ff = 128;
  o.n_layer = 1;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  PruneOptions prune;
  prune.method = "magnitude";
  prune.sparsity = 0.7;
  prune.format = "sparse-q4";
  auto pruned = prune_model(in, dir + "/sparse.gguf", prune, nullptr);
  ASSERT_TRUE(pruned.is_ok()) << pruned.status().message();
  std::vector<char> bytes;
  std::string needle;
  {
    auto file = GgufFile::open(dir + "/sparse.gguf");
    ASSERT_TRUE(file.is_ok()) << file.status().message();
    const GgufTensorInfo* t = (*file)->find_tensor("blk.0.ffn_up.weight");
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(is_sparse_q4(t->traits->type));
    needle.assign(reinterpret_cast<const char*>(t->data), 32);  // the first masks and scales
    std::ifstream f(dir + "/sparse.gguf", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto at = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  ASSERT_NE(at, bytes.end());
  std::fill(at, at + 16, static_cast<char>(0xff));  // row 0 blocks 0 and 1: 128 codes promised
  std::ofstream(dir + "/bad.gguf", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto model = Model::load(dir + "/bad.gguf");
  ASSERT_FALSE(model.is_ok());
  EXPECT_NE(model.status().message().find("blk.0.ffn_up.weight"), std::string::npos) << model.status().message();
  EXPECT_NE(model.status().message().find("mask bits"), std::string::npos) << model.status().message();
}

}  // namespace
}  // namespace frugal
