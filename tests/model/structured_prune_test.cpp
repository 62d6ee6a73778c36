// Structured pruning on tiny random models: removing a block that adds nothing, or FFN channels
// that add nothing, leaves the logits unchanged; the written files hold exactly the kept tensors,
// renumbered and resized, with every other key kept; impossible requests fail without a file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "compress/structured_prune.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"

namespace frugal {
namespace {

// Copies `in` to `out`, passing every float matrix through `edit(name, values, rows, cols)`.
void rewrite_tiny_model(const std::string& in, const std::string& out,
                        const std::function<void(const std::string&, std::vector<float>&, int64_t, int64_t)>& edit) {
  auto file = GgufFile::open(in);
  ASSERT_TRUE(file.is_ok());
  GgufWriter writer((*file)->alignment());
  for (const auto& [key, value] : (*file)->metadata()) writer.set_value(key, value);
  for (const auto& t : (*file)->tensors()) {
    ASSERT_EQ(t.type_id, static_cast<uint32_t>(DType::F32));
    std::vector<float> values(t.element_count());
    std::memcpy(values.data(), t.data, t.bytes);
    if (t.dims.size() == 2) edit(t.name, values, t.dims[1], t.dims[0]);
    std::vector<uint8_t> bytes(t.bytes);
    std::memcpy(bytes.data(), values.data(), t.bytes);
    writer.add_tensor(t.name, DType::F32, t.dims, std::move(bytes));
  }
  ASSERT_TRUE(writer.write(out).is_ok());
}

std::vector<float> last_logits(const std::string& path, const std::vector<int32_t>& tokens) {
  auto model = Model::load(path);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  if (!model.is_ok()) return {};
  TransformerOptions options;
  options.n_ctx = 64;
  Transformer transformer(model.value(), options);
  EXPECT_TRUE(transformer.evaluate(tokens.data(), static_cast<int64_t>(tokens.size())).is_ok());
  const float* l = transformer.last_logits();
  return std::vector<float>(l, l + model.value()->config().n_vocab);
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tolerance) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tolerance) << "logit " << i;
}

const std::vector<int32_t> kTokens = {5, 80, 101, 32, 7, 200, 66, 13, 90, 120};

TEST(StructuredPrune, RemovingABlockThatAddsNothingKeepsTheLogits) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_layer = 4;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  // Block 1 writes nothing into the residual stream: its output projections are zero.
  rewrite_tiny_model(dir + "/tiny.gguf", dir + "/identity_block.gguf", [](const std::string& name, std::vector<float>& v, int64_t, int64_t) {
    if (name == "blk.1.attn_output.weight" || name == "blk.1.ffn_down.weight") std::fill(v.begin(), v.end(), 0.0f);
  });
  auto input = GgufFile::open(dir + "/identity_block.gguf");
  ASSERT_TRUE(input.is_ok());
  ASSERT_TRUE(write_without_blocks(**input, {1}, dir + "/pruned.gguf", [](GgufWriter& w) { w.set_string(names::kPruneMethodKey, "layers"); }).is_ok());

  auto pruned = GgufFile::open(dir + "/pruned.gguf");
  ASSERT_TRUE(pruned.is_ok());
  EXPECT_EQ((*pruned)->get_int("llama.block_count").value(), 3);
  EXPECT_EQ((*pruned)->get_string_or("frugal.prune.method", ""), "layers");
  // Old blocks 0, 2, 3 are the new 0, 1, 2, stored bit for bit; nothing of block 3 remains.
  for (const auto& [from, to] : std::vector<std::pair<int, int>>{{0, 0}, {2, 1}, {3, 2}}) {
    for (const char* suffix : {"attn_norm.weight", "attn_q.weight", "ffn_down.weight"}) {
      const auto* a = (*input)->find_tensor("blk." + std::to_string(from) + "." + suffix);
      const auto* b = (*pruned)->find_tensor("blk." + std::to_string(to) + "." + suffix);
      ASSERT_TRUE(a && b) << suffix;
      EXPECT_EQ(a->dims, b->dims);
      EXPECT_EQ(0, std::memcmp(a->data, b->data, a->bytes)) << suffix;
    }
  }
  EXPECT_EQ((*pruned)->find_tensor("blk.3.attn_q.weight"), nullptr);
  EXPECT_EQ((*pruned)->tensors().size(), (*input)->tensors().size() - 9);
  for (const auto& [key, value] : (*input)->metadata()) {
    if (key == "llama.block_count") continue;
    const GgufValue* copy = (*pruned)->find(key);
    ASSERT_NE(copy, nullptr) << key;
    EXPECT_EQ(copy->to_display_string(), value.to_display_string()) << key;
  }
  expect_close(last_logits(dir + "/identity_block.gguf", kTokens), last_logits(dir + "/pruned.gguf", kTokens), 1e-4f);
  // A per-block metadata array ({arch}.* with one value per block) loses the removed block's value.
  {
    GgufWriter writer((*input)->alignment());
    for (const auto& [key, value] : (*input)->metadata()) writer.set_value(key, value);
    writer.set_int32_array("llama.per_block_values", {10, 11, 12, 13});
    for (const auto& t : (*input)->tensors()) writer.add_tensor(t.name, DType::F32, t.dims, std::vector<uint8_t>(t.data, t.data + t.bytes));
    ASSERT_TRUE(writer.write(dir + "/with_array.gguf").is_ok());
  }
  auto with_array = GgufFile::open(dir + "/with_array.gguf");
  ASSERT_TRUE(with_array.is_ok());
  ASSERT_TRUE(write_without_blocks(**with_array, {1}, dir + "/array_pruned.gguf").is_ok());
  auto array_pruned = GgufFile::open(dir + "/array_pruned.gguf");
  ASSERT_TRUE(array_pruned.is_ok());
  const GgufValue* values = (*array_pruned)->find("llama.per_block_values");
  ASSERT_NE(values, nullptr);
  EXPECT_EQ(values->numbers, (std::vector<double>{10, 12, 13}));
  EXPECT_EQ(values->array_size, 3u);
  // Removing a block that does add something changes them.
  ASSERT_TRUE(write_without_blocks(**input, {2}, dir + "/pruned_other.gguf").is_ok());
  const auto base = last_logits(dir + "/identity_block.gguf", kTokens), other = last_logits(dir + "/pruned_other.gguf", kTokens);
  double change = 0;
  for (size_t i = 0; i < base.size(); ++i) change = std::max(change, static_cast<double>(std::fabs(base[i] - other[i])));
  EXPECT_GT(change, 1e-2);
}

TEST(StructuredPrune, RemovingFfnChannelsThatAddNothingKeepsTheLogits) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_layer = 2;
  o.n_ff = 96;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  // Per block, a different third of the channels has a zero column in the down projection.
  std::vector<std::vector<int64_t>> kept(2);
  for (int64_t c = 0; c < 96; ++c) {
    if (c % 3 != 0) kept[0].push_back(c);
    if (c % 3 != 2) kept[1].push_back(c);
  }
  rewrite_tiny_model(dir + "/tiny.gguf", dir + "/dead_channels.gguf", [&](const std::string& name, std::vector<float>& v, int64_t rows, int64_t cols) {
    for (int layer = 0; layer < 2; ++layer) {
      if (name != "blk." + std::to_string(layer) + ".ffn_down.weight") continue;
      for (int64_t c = 0; c < cols; ++c) {
        if (std::binary_search(kept[layer].begin(), kept[layer].end(), c)) continue;
        for (int64_t r = 0; r < rows; ++r) v[r * cols + c] = 0.0f;
      }
    }
  });
  auto input = GgufFile::open(dir + "/dead_channels.gguf");
  ASSERT_TRUE(input.is_ok());
  auto requantized = write_narrower_ffn(**input, kept, {}, dir + "/narrow.gguf");
  ASSERT_TRUE(requantized.is_ok()) << requantized.status().message();
  EXPECT_EQ(*requantized, 2);
  auto narrow = GgufFile::open(dir + "/narrow.gguf");
  ASSERT_TRUE(narrow.is_ok());
  EXPECT_EQ((*narrow)->get_int("llama.feed_forward_length").value(), 64);
  for (int layer = 0; layer < 2; ++layer) {
    const std::string p = "blk." + std::to_string(layer) + ".";
    const auto* gate_in = (*input)->find_tensor(p + "ffn_gate.weight");
    const auto* gate_out = (*narrow)->find_tensor(p + "ffn_gate.weight");
    const auto* down_in = (*input)->find_tensor(p + "ffn_down.weight");
    const auto* down_out = (*narrow)->find_tensor(p + "ffn_down.weight");
    ASSERT_TRUE(gate_in && gate_out && down_in && down_out);
    EXPECT_EQ(gate_out->dims, (std::vector<int64_t>{64, 64}));
    EXPECT_EQ(down_out->dims, (std::vector<int64_t>{64, 64}));
    const float* gi = reinterpret_cast<const float*>(gate_in->data);
    const float* go = reinterpret_cast<const float*>(gate_out->data);
    const float* di = reinterpret_cast<const float*>(down_in->data);
    const float* dout = reinterpret_cast<const float*>(down_out->data);
    for (int64_t i = 0; i < 64; ++i) {
      const int64_t c = kept[layer][i];
      for (int64_t j = 0; j < 64; ++j) {
        ASSERT_EQ(go[i * 64 + j], gi[c * 64 + j]);        // row c of gate
        ASSERT_EQ(dout[j * 64 + i], di[j * 96 + c]);      // column c of down
      }
    }
  }
  expect_close(last_logits(dir + "/dead_channels.gguf", kTokens), last_logits(dir + "/narrow.gguf", kTokens), 1e-4f);
}

TEST(StructuredPrune, RemovingAKvGroupThatAddsNothingKeepsTheLogits) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_layer = 2;
  o.n_head = 6;
  o.n_head_kv = 3;  // groups: query heads {0,1}, {2,3}, {4,5}
  o.n_embd = 96;    // 16 dims per head
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  // Group 1 of block 0 and group 2 of block 1 write nothing: their query heads' Wo columns are 0.
  const int64_t hd = 16;
  rewrite_tiny_model(dir + "/tiny.gguf", dir + "/dead_group.gguf", [&](const std::string& name, std::vector<float>& v, int64_t rows, int64_t cols) {
    const int64_t dead = name == "blk.0.attn_output.weight" ? 1 : name == "blk.1.attn_output.weight" ? 2 : -1;
    if (dead < 0) return;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = dead * 2 * hd; j < (dead + 1) * 2 * hd; ++j) v[r * cols + j] = 0.0f;
    }
  });
  auto input = GgufFile::open(dir + "/dead_group.gguf");
  ASSERT_TRUE(input.is_ok());
  const std::vector<std::vector<int64_t>> kept = {{0, 2}, {0, 1}};
  auto requantized = write_fewer_heads(**input, kept, {}, dir + "/fewer.gguf");
  ASSERT_TRUE(requantized.is_ok()) << requantized.status().message();
  EXPECT_EQ(*requantized, 2);
  auto fewer = GgufFile::open(dir + "/fewer.gguf");
  ASSERT_TRUE(fewer.is_ok());
  EXPECT_EQ((*fewer)->get_int("llama.attention.head_count").value(), 4);
  EXPECT_EQ((*fewer)->get_int("llama.attention.head_count_kv").value(), 2);
  EXPECT_EQ((*fewer)->get_int("llama.attention.key_length").value(), hd);
  // Block 0 keeps query heads 0,1,4,5 and KV heads 0,2: rows of Q and K, bit for bit.
  const auto* q_in = (*input)->find_tensor("blk.0.attn_q.weight");
  const auto* q_out = (*fewer)->find_tensor("blk.0.attn_q.weight");
  const auto* k_in = (*input)->find_tensor("blk.0.attn_k.weight");
  const auto* k_out = (*fewer)->find_tensor("blk.0.attn_k.weight");
  ASSERT_TRUE(q_in && q_out && k_in && k_out);
  EXPECT_EQ(q_out->dims, (std::vector<int64_t>{96, 64}));
  EXPECT_EQ(k_out->dims, (std::vector<int64_t>{96, 32}));
  const size_t row = 96 * sizeof(float);
  const int64_t q_heads[] = {0, 1, 4, 5};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(0, std::memcmp(q_out->data + i * hd * row, q_in->data + q_heads[i] * hd * row, hd * row)) << i;
  EXPECT_EQ(0, std::memcmp(k_out->data + hd * row, k_in->data + 2 * hd * row, hd * row));
  auto model = Model::load(dir + "/fewer.gguf");
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ(model.value()->config().head_dim, hd);
  expect_close(last_logits(dir + "/dead_group.gguf", kTokens), last_logits(dir + "/fewer.gguf", kTokens), 1e-4f);

  // Calibrated: the silent groups score 0 and are the ones removed.
  StructuredPruneOptions options;
  options.method = "heads";
  options.sparsity = 0.33;
  options.calibration_path = testing::data_path("tinyshakespeare.txt");
  options.calibration_tokens = 256;
  auto report = structured_prune_model(dir + "/dead_group.gguf", dir + "/calibrated.gguf", options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_EQ(report->kept_groups, kept);
  EXPECT_EQ(report->n_head_after, 4);
  EXPECT_EQ(report->n_head_kv_after, 2);
  expect_close(last_logits(dir + "/dead_group.gguf", kTokens), last_logits(dir + "/calibrated.gguf", kTokens), 1e-4f);
}

TEST(StructuredPrune, QuantizedDownProjectionIsReencodedInItsType) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_ff = 128;
  o.weight_type = DType::Q8_0;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  auto input = GgufFile::open(dir + "/tiny.gguf");
  ASSERT_TRUE(input.is_ok());
  std::vector<std::vector<int64_t>> kept(2);
  for (int64_t c = 0; c < 96; ++c) kept[0].push_back(c), kept[1].push_back(c + 32);
  const std::vector<std::vector<double>> hidden(2, std::vector<double>(128, 1.0));
  ASSERT_TRUE(write_narrower_ffn(**input, kept, hidden, dir + "/narrow.gguf").is_ok());
  auto narrow = GgufFile::open(dir + "/narrow.gguf");
  ASSERT_TRUE(narrow.is_ok());
  const auto* down_in = (*input)->find_tensor("blk.1.ffn_down.weight");
  const auto* down_out = (*narrow)->find_tensor("blk.1.ffn_down.weight");
  ASSERT_TRUE(down_in && down_out);
  EXPECT_EQ(down_out->type_id, static_cast<uint32_t>(DType::Q8_0));
  // Kept columns 32..127 are whole q8_0 blocks of the input: re-encoding them is lossless.
  std::vector<float> a(128), b(96);
  for (int64_t r = 0; r < 64; ++r) {
    down_in->traits->dequantize_row(down_in->data + r * row_bytes(*down_in->traits, 128), a.data(), 128);
    down_out->traits->dequantize_row(down_out->data + r * row_bytes(*down_out->traits, 96), b.data(), 96);
    for (int64_t i = 0; i < 96; ++i) ASSERT_EQ(b[i], a[i + 32]) << r << "," << i;
  }
  auto model = Model::load(dir + "/narrow.gguf");
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ(model.value()->config().n_ff, 96);
}

TEST(StructuredPrune, CalibratedLayerPruningRemovesTheBlockThatChangesNothing) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_layer = 4;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  rewrite_tiny_model(dir + "/tiny.gguf", dir + "/identity_block.gguf", [](const std::string& name, std::vector<float>& v, int64_t, int64_t) {
    if (name == "blk.2.attn_output.weight" || name == "blk.2.ffn_down.weight") std::fill(v.begin(), v.end(), 0.0f);
  });
  auto model = Model::load(dir + "/identity_block.gguf");
  ASSERT_TRUE(model.is_ok());
  auto text = read_text_file(testing::data_path("tinyshakespeare.txt"));
  ASSERT_TRUE(text.is_ok());
  std::vector<int32_t> tokens = model.value()->tokenizer().encode(text->substr(0, 4000), true, false);
  tokens.resize(256);
  auto stats = collect_structured_statistics(*model.value(), tokens, 128, 2, nullptr);
  ASSERT_TRUE(stats.is_ok()) << stats.status().message();
  EXPECT_EQ(stats->tokens, 256);
  ASSERT_EQ(stats->block_influence.size(), 4u);
  EXPECT_NEAR(stats->block_influence[2], 0.0, 1e-9);
  EXPECT_NEAR(stats->angular_distance[2], 0.0, 1e-4);
  for (int layer : {0, 1, 3}) {
    EXPECT_GT(stats->block_influence[layer], 1e-3) << layer;
    EXPECT_GT(stats->angular_distance[layer], 1e-3) << layer;
    ASSERT_EQ(stats->ffn_input_square_sums[layer].size(), 64u);
    ASSERT_EQ(stats->ffn_hidden_square_sums[layer].size(), 96u);
    // The FFN input is RMS-normed: its squares sum to about tokens x n_embd x norm weight^2.
    double input = 0;
    for (double v : stats->ffn_input_square_sums[layer]) input += v;
    EXPECT_GT(input, 0.3 * 256 * 64);
    EXPECT_LT(input, 3.0 * 256 * 64);
  }

  StructuredPruneOptions options;
  options.method = "layers";
  options.sparsity = 0.25;
  options.calibration_path = testing::data_path("tinyshakespeare.txt");
  options.calibration_tokens = 512;
  auto report = structured_prune_model(dir + "/identity_block.gguf", dir + "/pruned.gguf", options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_EQ(report->removed_blocks, (std::vector<int64_t>{2}));
  auto pruned = GgufFile::open(dir + "/pruned.gguf");
  ASSERT_TRUE(pruned.is_ok());
  EXPECT_EQ((*pruned)->get_string_or(names::kPruneMethodKey, ""), "layers");
  EXPECT_NEAR((*pruned)->get_float_or(names::kPruneSparsityKey, 0.0), 0.25, 1e-6);
  EXPECT_EQ((*pruned)->get_string_or(names::kPrunePatternKey, ""), "structured: whole blocks");
  expect_close(last_logits(dir + "/identity_block.gguf", kTokens), last_logits(dir + "/pruned.gguf", kTokens), 1e-4f);
}

TEST(StructuredPrune, CalibratedWidthPruningReloadsAndRuns) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_ff = 128;
  o.weight_type = DType::Q8_0;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  StructuredPruneOptions options;
  options.method = "width";
  options.sparsity = 0.3;  // 89.6 channels -> 96
  options.calibration_path = testing::data_path("tinyshakespeare.txt");
  options.calibration_tokens = 512;
  auto report = structured_prune_model(dir + "/tiny.gguf", dir + "/narrow.gguf", options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_EQ(report->n_ff_after, 96);
  EXPECT_EQ(report->tensors_requantized, 2);
  EXPECT_EQ(report->parameters_before - report->parameters_after, 2 * 3 * 64 * 32);
  const auto logits = last_logits(dir + "/narrow.gguf", kTokens);
  ASSERT_FALSE(logits.empty());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(StructuredPrune, Gemma3WidthPrunesAndLayerPruningIsRefused) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.gemma3 = true;
  o.n_layer = 4;  // blocks 0 and 2 windowed, 1 and 3 global
  ASSERT_TRUE(testing::write_tiny_model(dir + "/gemma.gguf", o).is_ok());
  StructuredPruneOptions options;
  options.method = "layers";
  options.sparsity = 0.25;
  options.calibration_path = testing::data_path("tinyshakespeare.txt");
  options.calibration_tokens = 256;
  auto layers = structured_prune_model(dir + "/gemma.gguf", dir + "/layers.gguf", options, nullptr);
  ASSERT_FALSE(layers.is_ok());
  EXPECT_NE(layers.status().message().find("sliding-window or global"), std::string::npos) << layers.status().message();
  EXPECT_FALSE(testing::file_exists(dir + "/layers.gguf"));
  options.method = "width";
  options.sparsity = 0.3;
  auto width = structured_prune_model(dir + "/gemma.gguf", dir + "/width.gguf", options, nullptr);
  ASSERT_TRUE(width.is_ok()) << width.status().message();
  EXPECT_EQ(width->n_ff_after, 64);
  const auto logits = last_logits(dir + "/width.gguf", kTokens);
  ASSERT_FALSE(logits.empty());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(StructuredPrune, CommandLineRunsAndRefusesImpossibleRequests) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/out.gguf";
  testing::TinyModelOptions o;
  o.n_layer = 4;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  const std::string frugal = testing::shell_quote(testing::frugal_binary()) + " prune -m " + testing::shell_quote(in) + " -o " +
                             testing::shell_quote(out) + " --calib-tokens 256";
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {" --method layers --sparsity 0.1", "rounds to no block"},  // 0.4 of 4 blocks
      {" --method layers --sparsity 0.9", "would remove all 4 blocks"},
      {" --method layers --sparsity 1", "between 0 and 1"},
      {" --method layers --sparsity 0", "between 0 and 1"},
      {" --method width --sparsity 0", "between 0 and 1"},
      {" --method width --sparsity -0.2", "--sparsity"},
      {" --method width --sparsity 1.5", "--sparsity"},
      {" --method width --sparsity abc", "--sparsity"},
      {" --method width --sparsity 0.1", "removes no FFN channel of 96"},  // 86.4 rounds back to 96
      {" --method width --sparsity 0.95", "leaves no FFN channel"},
      {" --method width", "needs --sparsity"},
      {" --method heads --sparsity 0.2", "rounds to no group"},  // 0.4 of 2 KV groups
      {" --method heads --sparsity 0.8", "would remove all 2 KV groups"},
      {" --method layers --sparsity 0.25 --pattern 2:4", "--pattern does not apply"},
      {" --method width --sparsity 0.3 --owl", "--owl does not apply"},
      {" --method layers --sparsity 0.25 --calib " + testing::shell_quote(dir + "/none.txt"), "none.txt"},
      {" --method magnitude --sparsity 0.5 --owl", "wanda or sparsegpt"},
      {" --method wanda --pattern 2:4 --owl", "unstructured"},
      {" --method wanda --sparsity 0.5 --owl-m 3", "need --owl"},
  };
  for (const auto& c : cases) {
    const auto r = testing::run_command(frugal + c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_FALSE(testing::file_exists(out)) << c.args;
  }
  const auto layers = testing::run_command(frugal + " --method layers --sparsity 0.5");
  ASSERT_EQ(layers.exit_code, 0) << layers.err;
  EXPECT_NE(layers.err.find("removed 2 of 4 blocks"), std::string::npos) << layers.err;
  auto model = Model::load(out);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ(model.value()->config().n_layer, 2);
  const auto width = testing::run_command(frugal + " --method width --sparsity 0.3");
  ASSERT_EQ(width.exit_code, 0) << width.err;
  EXPECT_NE(width.err.find("FFN width 96 -> 64"), std::string::npos) << width.err;
  EXPECT_FALSE(last_logits(out, kTokens).empty());
  const auto heads = testing::run_command(frugal + " --method heads --sparsity 0.5");
  ASSERT_EQ(heads.exit_code, 0) << heads.err;
  EXPECT_NE(heads.err.find("2 query and 1 key/value heads kept"), std::string::npos) << heads.err;
  EXPECT_FALSE(last_logits(out, kTokens).empty());
}

TEST(StructuredPrune, BadRequestsFailWithoutAFile) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_layer = 2;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  auto input = GgufFile::open(dir + "/tiny.gguf");
  ASSERT_TRUE(input.is_ok());
  const std::string out = dir + "/out.gguf";
  EXPECT_FALSE(write_without_blocks(**input, {0, 1}, out).is_ok());
  EXPECT_FALSE(write_without_blocks(**input, {2}, out).is_ok());
  EXPECT_FALSE(write_without_blocks(**input, {0, 0}, out).is_ok());
  std::vector<std::vector<int64_t>> uneven = {{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 8, 9}};
  EXPECT_FALSE(write_narrower_ffn(**input, uneven, {}, out).is_ok());
  std::vector<std::vector<int64_t>> unsorted = {{7, 1, 2, 3, 4, 5, 6, 0}, {0, 1, 2, 3, 4, 5, 6, 7}};
  EXPECT_FALSE(write_narrower_ffn(**input, unsorted, {}, out).is_ok());
  std::vector<std::vector<int64_t>> beyond = {{0, 1, 2, 3, 4, 5, 6, 96}, {0, 1, 2, 3, 4, 5, 6, 7}};
  EXPECT_FALSE(write_narrower_ffn(**input, beyond, {}, out).is_ok());
  EXPECT_FALSE(write_fewer_heads(**input, {{0}, {2}}, {}, out).is_ok());  // there is no group 2
  EXPECT_FALSE(write_fewer_heads(**input, {{}, {}}, {}, out).is_ok());    // no group left
  // A bias of a matrix being cut would keep its old size: refused.
  {
    GgufWriter writer((*input)->alignment());
    for (const auto& [key, value] : (*input)->metadata()) writer.set_value(key, value);
    for (const auto& t : (*input)->tensors()) writer.add_tensor(t.name, DType::F32, t.dims, std::vector<uint8_t>(t.data, t.data + t.bytes));
    writer.add_tensor("blk.0.ffn_up.bias", DType::F32, {96}, std::vector<uint8_t>(96 * sizeof(float), 0));
    writer.add_tensor("blk.1.attn_q.bias", DType::F32, {64}, std::vector<uint8_t>(64 * sizeof(float), 0));
    ASSERT_TRUE(writer.write(dir + "/biased.gguf").is_ok());
  }
  auto biased = GgufFile::open(dir + "/biased.gguf");
  ASSERT_TRUE(biased.is_ok());
  std::vector<std::vector<int64_t>> eight(2);
  for (int64_t c = 0; c < 64; ++c) eight[0].push_back(c), eight[1].push_back(c);
  auto ffn = write_narrower_ffn(**biased, eight, {}, out);
  ASSERT_FALSE(ffn.is_ok());
  EXPECT_NE(ffn.status().message().find("blk.0.ffn_up.bias"), std::string::npos) << ffn.status().message();
  auto heads = write_fewer_heads(**biased, {{0}, {1}}, {}, out);
  ASSERT_FALSE(heads.is_ok());
  EXPECT_NE(heads.status().message().find("blk.1.attn_q.bias"), std::string::npos) << heads.status().message();
  StructuredPruneOptions options;
  options.method = "layers";
  options.sparsity = 0.1;  // 0.2 of a block
  options.calibration_path = testing::data_path("tinyshakespeare.txt");
  auto r = structured_prune_model(dir + "/tiny.gguf", out, options, nullptr);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("no block"), std::string::npos) << r.status().message();
  options.method = "width";
  options.sparsity = 1.0;
  EXPECT_FALSE(structured_prune_model(dir + "/tiny.gguf", out, options, nullptr).is_ok());
  options.sparsity = 0.3;
  EXPECT_FALSE(structured_prune_model(dir + "/tiny.gguf", dir + "/tiny.gguf", options, nullptr).is_ok());
  EXPECT_FALSE(testing::file_exists(out));
}

}  // namespace
}  // namespace frugal
