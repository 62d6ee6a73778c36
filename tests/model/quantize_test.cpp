// frugal quantize on tiny random models: written files reload and hold exactly the in-memory
// encoding; metadata survives; bad combinations fail cleanly and leave no file behind.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>

#include "compress/quantize_model.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"
#include "tensor/generic_group.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

class Quantize : public ::testing::TestWithParam<const char*> {};

TEST_P(Quantize, WrittenFileMatchesInMemoryEncoding) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/out.gguf";
  testing::TinyModelOptions o;
  o.n_embd = 256;  // K-quant rows need 256 elements
  o.n_ff = 512;
  o.n_head = 4;
  o.n_head_kv = 2;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  QuantizeOptions options;
  options.format = GetParam();
  options.embedding_format = "q8_0";
  auto report = quantize_model(in, out, options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_GT(report->tensors_quantized, 0);

  auto original = GgufFile::open(in);
  auto written = GgufFile::open(out);
  ASSERT_TRUE(original.is_ok() && written.is_ok());
  const DType target = parse_format(GetParam()).value();
  ASSERT_EQ((*written)->tensors().size(), (*original)->tensors().size());
  for (const auto& t : (*original)->tensors()) {
    const GgufTensorInfo* w = (*written)->find_tensor(t.name);
    ASSERT_NE(w, nullptr) << t.name;
    EXPECT_EQ(w->dims, t.dims);
    if (t.dims.size() == 1) {
      EXPECT_EQ(std::vector<uint8_t>(w->data, w->data + w->bytes), std::vector<uint8_t>(t.data, t.data + t.bytes)) << t.name;
      continue;
    }
    const DType expected_type = t.name == "token_embd.weight" ? DType::Q8_0 : target;
    ASSERT_EQ(w->type_id, static_cast<uint32_t>(expected_type)) << t.name;
    const TypeTraits& to = type_traits(expected_type);
    const int64_t cols = t.dims[0], rows = t.dims[1];
    std::vector<float> row(cols);
    std::vector<uint8_t> expected(row_bytes(to, cols));
    for (int64_t r = 0; r < rows; ++r) {
      t.traits->dequantize_row(t.data + r * row_bytes(*t.traits, cols), row.data(), cols);
      to.quantize_row(row.data(), expected.data(), cols);
      ASSERT_EQ(0, std::memcmp(expected.data(), w->data + r * row_bytes(to, cols), expected.size())) << t.name << " row " << r;
    }
  }
  for (const auto& [key, value] : (*original)->metadata()) {
    const GgufValue* copy = (*written)->find(key);
    ASSERT_NE(copy, nullptr) << key;
    EXPECT_EQ(copy->to_display_string(), value.to_display_string()) << key;
  }
  // The quantized model runs.
  auto model = Model::load(out);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  TransformerOptions to;
  to.n_ctx = 16;
  Transformer transformer(model.value(), to);
  const int32_t tokens[] = {5, 6, 7};
  ASSERT_TRUE(transformer.evaluate(tokens, 3).is_ok());
}

INSTANTIATE_TEST_SUITE_P(Formats, Quantize, ::testing::Values("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q6_k", "q4_k", "q3_k", "q2_k"));

TEST(QuantizeBadInput, FailsCleanlyWithoutOutput) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/out.gguf";
  ASSERT_TRUE(testing::write_tiny_model(in, {}).is_ok());
  const std::string frugal = shell_quote(testing::frugal_binary()) + " quantize -m " + shell_quote(in) + " -o " + shell_quote(out);
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {" --format q9_9", "unknown format 'q9_9'"},
      {" --bits 3 --group 128", "--group 128 does not divide the row length 64"},
      {" --bits 3 --group 48", "--group must be 32, 64, 128, 256 or -1"},
      {" --bits 9", "--bits must be between 2 and 8"},
      {" --group 0", "--group must be a positive size"},
      {" --method magic", "unknown method 'magic'"},
      {" --method smoothquant --bits 4", "smoothquant stores 8-bit weights"},
      {" --method llm-int8 --format q4_0", "stores int8 rows in q8_0 blocks"},
      {" --method w8a8 --alpha 2", "--alpha"},
      {" --types-from " + shell_quote(dir + "/none.gguf"), "none.gguf"},
      {" --types-from " + shell_quote(in) + " --format q4_0", "exclude each other"},
  };
  for (const auto& c : cases) {
    const auto r = run_command(frugal + c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_FALSE(testing::file_exists(out)) << c.args;
  }
  const auto missing = run_command(shell_quote(testing::frugal_binary()) + " quantize -m " + shell_quote(dir + "/none.gguf") +
                                   " -o " + shell_quote(out) + " --format q8_0");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_FALSE(testing::file_exists(out));
  const auto same = run_command(shell_quote(testing::frugal_binary()) + " quantize -m " + shell_quote(in) + " -o " + shell_quote(in) + " --format q8_0");
  EXPECT_EQ(same.exit_code, 1);
  // K-quants on 64-wide rows fall back to a 32-element type, as llama-quantize does.
  const auto fallback = run_command(frugal + " --format q4_k");
  EXPECT_EQ(fallback.exit_code, 0) << fallback.err;
  EXPECT_NE(fallback.err.find("fell back"), std::string::npos) << fallback.err;
  auto f = GgufFile::open(out);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ((*f)->find_tensor("blk.0.attn_q.weight")->type_id, static_cast<uint32_t>(DType::Q5_0));
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

// Writes `repeats` copies of a short sentence to `path` as calibration text and returns it.
std::string write_calibration_text(const std::string& path, int repeats) {
  std::string text;
  for (int i = 0; i < repeats; ++i) text += "the theater on the sea, in the storm; the sailor sang. ";
  std::ofstream(path) << text;
  return text;
}

class QuantizeCalibrated : public ::testing::TestWithParam<const char*> {};

TEST_P(QuantizeCalibrated, ReloadsAndBeatsRtnOnTheCalibrationText) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.n_embd = 128;
  o.n_ff = 256;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  const std::string text = write_calibration_text(dir + "/calib.txt", 200);
  QuantizeOptions options;
  options.method = GetParam();
  options.format = "q4_0";
  options.calibration_path = dir + "/calib.txt";
  options.calibration_tokens = 1024;
  auto report = quantize_model(in, dir + "/gptq.gguf", options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  options.method = "rtn";
  ASSERT_TRUE(quantize_model(in, dir + "/rtn.gguf", options, nullptr).is_ok());

  auto base = Model::load(in);
  auto gptq = Model::load(dir + "/gptq.gguf");
  auto rtn = Model::load(dir + "/rtn.gguf");
  ASSERT_TRUE(base.is_ok() && gptq.is_ok() && rtn.is_ok());
  EXPECT_EQ(gptq.value()->layers()[0].wq.traits->type, DType::Q4_0);
  // Divergence from the base on (a part of) the calibration text: GPTQ minimizes exactly this
  // layer by layer, so it must not be worse than round-to-nearest.
  const auto tokens = base.value()->tokenizer().encode(text, true, false);
  TransformerOptions t;
  t.n_ctx = 128;
  t.n_batch = 128;
  t.all_logits = true;
  Transformer base_t(base.value(), t), gptq_t(gptq.value(), t), rtn_t(rtn.value(), t);
  auto with_gptq = compare_distributions(gptq_t, base_t, tokens, 128, 4, nullptr);
  auto with_rtn = compare_distributions(rtn_t, base_t, tokens, 128, 4, nullptr);
  ASSERT_TRUE(with_gptq.is_ok() && with_rtn.is_ok());
  std::printf("tiny model, q4_0: KLD %s %.6f vs rtn %.6f\n", GetParam(), with_gptq->kld_mean, with_rtn->kld_mean);
  EXPECT_LT(with_gptq->kld_mean, with_rtn->kld_mean);
}

INSTANTIATE_TEST_SUITE_P(Methods, QuantizeCalibrated, ::testing::Values("gptq", "awq"));

// Generic group layouts (frugal's own types): the written rows decode to exactly what
// round-to-nearest chose in memory, --types-from copies a layout, and the model runs.
TEST(QuantizeGeneric, WrittenFileDecodesToTheInMemoryGrid) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/g.gguf";
  testing::TinyModelOptions o;
  o.n_embd = 128;
  o.n_ff = 192;  // 192 is not a multiple of 128: down's rows fall back to groups of 64
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  QuantizeOptions options;
  options.bits = 3;
  options.group = 128;
  EXPECT_FALSE(quantize_model(in, out, options, nullptr).is_ok());
  EXPECT_FALSE(testing::file_exists(out));
  options.group_fallback = true;
  auto report = quantize_model(in, out, options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  EXPECT_EQ(report->fallbacks, 2);  // ffn_down of both layers
  auto original = GgufFile::open(in);
  auto written = GgufFile::open(out);
  ASSERT_TRUE(original.is_ok() && written.is_ok());
  for (const auto& t : (*original)->tensors()) {
    if (t.dims.size() != 2 || t.name == "token_embd.weight") continue;
    const GgufTensorInfo* w = (*written)->find_tensor(t.name);
    ASSERT_NE(w, nullptr);
    const int64_t cols = t.dims[0], rows = t.dims[1], group = cols % 128 == 0 ? 128 : 64;
    ASSERT_EQ(w->type_id, static_cast<uint32_t>(*generic_group_type(3, group, false))) << t.name;
    std::vector<float> values(rows * cols), decoded(cols);
    for (int64_t r = 0; r < rows; ++r) t.traits->dequantize_row(t.data + r * row_bytes(*t.traits, cols), values.data() + r * cols, cols);
    const auto expected = compress::quantize_matrix(compress::QuantTarget::generic_grid(3, group, false), values.data(), rows, cols,
                                                    nullptr, compress::GridFit::kMinMax);
    for (int64_t r = 0; r < rows; ++r) {
      w->traits->dequantize_row(w->data + r * row_bytes(*w->traits, cols), decoded.data(), cols);
      for (int64_t k = 0; k < cols; ++k) ASSERT_EQ(decoded[k], expected.values[r * cols + k]) << t.name << " " << r << "," << k;
    }
  }
  auto model = Model::load(out);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  Transformer transformer(model.value(), TransformerOptions{.n_ctx = 16});
  const int32_t tokens[] = {5, 6, 7};
  ASSERT_TRUE(transformer.evaluate(tokens, 3).is_ok());

  // --types-from reproduces the generic layout tensor by tensor with another method.
  QuantizeOptions copy;
  copy.types_from = out;
  ASSERT_TRUE(quantize_model(in, dir + "/copy.gguf", copy, nullptr).is_ok());
  auto copied = GgufFile::open(dir + "/copy.gguf");
  ASSERT_TRUE(copied.is_ok());
  for (const auto& t : (*written)->tensors()) EXPECT_EQ((*copied)->find_tensor(t.name)->type_id, t.type_id) << t.name;
}

// SmoothQuant, plain W8A8 and LLM.int8(): q8_0 rows with one scale each, the per-token flag,
// LLM.int8()'s outlier tensors; the files reload, run, and stay close to the base model.
class QuantizeW8A8 : public ::testing::TestWithParam<const char*> {};

TEST_P(QuantizeW8A8, ReloadsWithPerTokenInputsAndStaysCloseToTheBase) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/w8a8.gguf";
  testing::TinyModelOptions o;
  o.n_embd = 128;
  o.n_ff = 256;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  write_calibration_text(dir + "/calib.txt", 100);
  QuantizeOptions options;
  options.method = GetParam();
  options.bits = 8;
  options.calibration_path = dir + "/calib.txt";
  options.calibration_tokens = 512;
  options.outlier_threshold = 1.5f;  // the tiny model's inputs are small; make some columns outliers
  auto report = quantize_model(in, out, options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  auto written = GgufFile::open(out);
  ASSERT_TRUE(written.is_ok());
  EXPECT_EQ((*written)->get_string_or("frugal.activation_quant", ""), "per_token");
  auto base = Model::load(in);
  auto model = Model::load(out);
  ASSERT_TRUE(base.is_ok() && model.is_ok()) << model.status().message();
  const LayerWeights& layer = model.value()->layers()[0];
  EXPECT_TRUE(layer.wq.per_token_input && layer.w_down.per_token_input);
  EXPECT_FALSE(model.value()->output().per_token_input);
  ASSERT_EQ(layer.wq.traits->type, DType::Q8_0);
  // Vector-wise: every block of a row has the row's scale.
  const auto* blocks = reinterpret_cast<const uint16_t*>(layer.wq.row(3));
  for (int64_t b = 1; b < layer.wq.cols / 32; ++b) EXPECT_EQ(blocks[b * 17], blocks[0]);
  const bool llm_int8 = std::string(GetParam()) == "llm-int8";
  EXPECT_EQ(layer.wq.n_outliers > 0, llm_int8);
  if (llm_int8) {
    EXPECT_EQ(layer.wq.n_outliers, layer.wk.n_outliers);  // one input, one outlier set
  }
  if (std::string(GetParam()) == "smoothquant") {
    // The smoothing went into the norm: the stored weights times the norm ratio are the original
    // weights up to int8 rounding.
    const LayerWeights& original = base.value()->layers()[0];
    std::vector<float> before(layer.wq.cols), after(layer.wq.cols);
    for (int64_t r = 0; r < layer.wq.rows; ++r) {
      original.wq.traits->dequantize_row(original.wq.row(r), before.data(), layer.wq.cols);
      layer.wq.traits->dequantize_row(layer.wq.row(r), after.data(), layer.wq.cols);
      float amax = 0;
      for (int64_t j = 0; j < layer.wq.cols; ++j) amax = std::max(amax, std::fabs(after[j]));
      for (int64_t j = 0; j < layer.wq.cols; ++j) {
        const float s = original.attn_norm[j] / layer.attn_norm[j];
        ASSERT_NEAR(after[j] / s, before[j], 0.6f * amax / 127.0f / s) << r << "," << j;
      }
    }
  }
  std::string more;
  for (int i = 0; i < 4; ++i) more += "a quiet harbour, the ships at rest; the gulls are crying over the pier. ";
  const auto tokens = base.value()->tokenizer().encode(more, true, false);
  TransformerOptions t;
  t.n_ctx = 128;
  t.n_batch = 128;
  t.all_logits = true;
  Transformer base_t(base.value(), t), model_t(model.value(), t);
  auto divergence = compare_distributions(model_t, base_t, tokens, 64, 2, nullptr);
  ASSERT_TRUE(divergence.is_ok()) << divergence.status().message();
  std::printf("tiny model, %s: KLD %.6f, same top %.1f%%\n", GetParam(), divergence->kld_mean, divergence->same_top_pct);
  EXPECT_LT(divergence->kld_mean, 0.01);
}

// A W8A8 file whose run-time tensors were tampered with fails to load with a message, never a
// crash: bad activation mode, outlier indices out of range or unsorted, a missing half.
TEST(QuantizeW8A8Files, TamperedFilesFailToLoad) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf", out = dir + "/int8.gguf";
  testing::TinyModelOptions o;
  o.n_embd = 128;
  o.n_ff = 256;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  write_calibration_text(dir + "/calib.txt", 60);
  QuantizeOptions options;
  options.method = "llm-int8";
  options.bits = 8;
  options.calibration_path = dir + "/calib.txt";
  options.calibration_tokens = 256;
  options.outlier_threshold = 1.5f;
  ASSERT_TRUE(quantize_model(in, out, options, nullptr).is_ok());
  auto file = GgufFile::open(out);
  ASSERT_TRUE(file.is_ok());
  const std::string columns = "blk.0.attn_q.outlier_columns";
  ASSERT_NE((*file)->find_tensor(columns), nullptr);
  // Rewrites the file with `edit` applied to the metadata and tensors.
  auto rewrite = [&](const std::string& path, const std::string& mode, const std::function<bool(const GgufTensorInfo&, std::vector<uint8_t>&)>& edit) {
    GgufWriter writer((*file)->alignment());
    for (const auto& [key, value] : (*file)->metadata()) writer.set_value(key, value);
    writer.set_string("frugal.activation_quant", mode);
    for (const auto& t : (*file)->tensors()) {
      std::vector<uint8_t> bytes(t.data, t.data + t.bytes);
      if (edit(t, bytes)) writer.add_tensor(t.name, static_cast<DType>(t.type_id), t.dims, std::move(bytes));
    }
    ASSERT_TRUE(writer.write(path).is_ok());
  };
  auto set_first_column = [&](float value) {
    return [&, value](const GgufTensorInfo& t, std::vector<uint8_t>& bytes) {
      if (t.name == columns) std::memcpy(bytes.data(), &value, sizeof(float));
      return true;
    };
  };
  struct Case {
    std::string name, mode;
    std::function<bool(const GgufTensorInfo&, std::vector<uint8_t>&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"mode", "per_row", [](const GgufTensorInfo&, std::vector<uint8_t>&) { return true; }, "expected per_block or per_token"},
      {"range", "per_token", set_first_column(1e6f), "increasing column indices below 128"},
      {"negative", "per_token", set_first_column(-1.0f), "increasing column indices below 128"},
      {"fraction", "per_token", set_first_column(0.5f), "increasing column indices below 128"},
      {"half", "per_token", [](const GgufTensorInfo& t, std::vector<uint8_t>&) { return t.name != "blk.0.attn_q.outlier_weight"; },
       "only one of .outlier_columns and .outlier_weight"},
  };
  for (const auto& c : cases) {
    const std::string path = dir + "/" + c.name + ".gguf";
    rewrite(path, c.mode, c.edit);
    auto model = Model::load(path);
    ASSERT_FALSE(model.is_ok()) << c.name;
    EXPECT_NE(model.status().message().find(c.message), std::string::npos) << c.name << ": " << model.status().message();
  }
  // The untouched file loads.
  EXPECT_TRUE(Model::load(out).is_ok());
}

INSTANTIATE_TEST_SUITE_P(Methods, QuantizeW8A8, ::testing::Values("smoothquant", "w8a8", "llm-int8"),
                         [](const auto& info) { return std::string(info.param) == "llm-int8" ? std::string("llm_int8") : std::string(info.param); });

// Every chain of two `frugal quantize` runs (any method's output as the next one's input) either
// works or is refused with a message, and what it writes loads and runs. The keys that describe an
// encoding (general.file_type, the per-token activation flag) describe the output, not the input:
// a q4_K file made from a W8A8 file used to keep the per-token flag and fail to load.
TEST(QuantizeChains, EveryPairOfMethodsWorksOrRefuses) {
  const std::string dir = testing::temp_dir();
  const std::string in = dir + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.n_embd = 128;
  o.n_ff = 256;
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  write_calibration_text(dir + "/calib.txt", 30);
  struct Step {
    const char* name;
    std::function<void(QuantizeOptions&)> set;
    int64_t file_type;  // expected general.file_type, -1 = absent
  };
  const std::vector<Step> steps = {
      {"q4_k", [](QuantizeOptions& q) { q.format = "q4_k"; }, 15},
      {"fq3_g64", [](QuantizeOptions& q) { q.bits = 3; q.group = 64; }, -1},
      {"int8-per-channel", [](QuantizeOptions& q) { q.bits = 8; q.group = -1; q.symmetric = true; }, 7},
      {"gptq", [](QuantizeOptions& q) { q.method = "gptq"; q.format = "q4_0"; }, 2},
      {"awq", [](QuantizeOptions& q) { q.method = "awq"; q.bits = 4; q.group = 64; }, -1},
      {"smoothquant", [](QuantizeOptions& q) { q.method = "smoothquant"; q.bits = 8; }, 7},
      {"w8a8", [](QuantizeOptions& q) { q.method = "w8a8"; q.bits = 8; }, 7},
      {"llm-int8", [](QuantizeOptions& q) { q.method = "llm-int8"; q.bits = 8; q.outlier_threshold = 1.5f; }, 7},
  };
  auto options_for = [&](const Step& step) {
    QuantizeOptions q;
    q.calibration_path = dir + "/calib.txt";
    q.calibration_tokens = 128;
    q.n_threads = 1;
    step.set(q);
    return q;
  };
  // Checks a written file: it loads and runs, and its encoding keys name `step`'s output.
  auto check_output = [&](const std::string& path, const Step& step) {
    auto file = GgufFile::open(path);
    ASSERT_TRUE(file.is_ok()) << file.status().message();
    const GgufValue* file_type = (*file)->find("general.file_type");
    if (step.file_type < 0) {
      EXPECT_EQ(file_type, nullptr) << path << ": general.file_type " << file_type->to_display_string();
    } else {
      ASSERT_NE(file_type, nullptr) << path;
      EXPECT_EQ(file_type->as_int(), step.file_type) << path;
    }
    const bool int8 = std::string(step.name) == "smoothquant" || std::string(step.name) == "w8a8" || std::string(step.name) == "llm-int8";
    EXPECT_EQ((*file)->get_string_or("frugal.activation_quant", "per_block"), int8 ? "per_token" : "per_block") << path;
    bool outliers = false;
    for (const auto& t : (*file)->tensors()) outliers |= t.name.find(".outlier_") != std::string::npos;
    EXPECT_EQ(outliers, std::string(step.name) == "llm-int8") << path;
    auto model = Model::load(path);
    ASSERT_TRUE(model.is_ok()) << model.status().message();
    Transformer transformer(model.value(), TransformerOptions{.n_ctx = 16});
    const int32_t tokens[] = {5, 6, 7};
    EXPECT_TRUE(transformer.evaluate(tokens, 3).is_ok()) << path;
  };
  for (const Step& first : steps) {
    const std::string middle = dir + "/" + first.name + ".gguf";
    auto report = quantize_model(in, middle, options_for(first), nullptr);
    ASSERT_TRUE(report.is_ok()) << first.name << ": " << report.status().message();
    check_output(middle, first);
    for (const Step& second : steps) {
      SCOPED_TRACE(std::string(first.name) + " -> " + second.name);
      const std::string out = dir + "/" + first.name + "-" + second.name + ".gguf";
      auto again = quantize_model(middle, out, options_for(second), nullptr);
      if (std::string(first.name) == "llm-int8") {
        // Its fp16 outlier columns would be lost: refused, and nothing written.
        ASSERT_FALSE(again.is_ok());
        EXPECT_NE(again.status().message().find("LLM.int8() file"), std::string::npos) << again.status().message();
        EXPECT_FALSE(testing::file_exists(out));
        continue;
      }
      ASSERT_TRUE(again.is_ok()) << again.status().message();
      check_output(out, second);
    }
  }
}

TEST(QuantizeGptq, MissingOrEmptyCalibrationFails) {
  const std::string dir = testing::temp_dir();
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", {}).is_ok());
  std::ofstream(dir + "/empty.txt") << "";
  for (const std::string& calib : {dir + "/missing.txt", dir + "/empty.txt"}) {
    const auto r = testing::run_command(shell_quote(testing::frugal_binary()) + " quantize -m " + shell_quote(dir + "/tiny.gguf") +
                                        " -o " + shell_quote(dir + "/out.gguf") + " --method gptq --format q8_0 --calib " +
                                        shell_quote(calib));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(calib), std::string::npos) << r.err;
    EXPECT_FALSE(testing::file_exists(dir + "/out.gguf"));
  }
}

}  // namespace
}  // namespace frugal
