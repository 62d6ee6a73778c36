// OWL on a tiny random model: the block whose weights hold outliers gets the highest outlier ratio
// and the lowest sparsity, and the block sparsities average to the target.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "compress/owl.h"
#include "compress/prune_model.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"

namespace frugal {
namespace {

// A tiny 3-block model whose block 2 (the last, so no later block sees its larger outputs) has 1%
// of its weights multiplied by 30: outliers at any input scale.
std::string write_model_with_outliers(const std::string& dir) {
  testing::TinyModelOptions o;
  o.n_layer = 3;
  EXPECT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  {
    auto file = GgufFile::open(dir + "/tiny.gguf");
    if (!file.is_ok()) return "";
    GgufWriter writer((*file)->alignment());
    for (const auto& [key, value] : (*file)->metadata()) writer.set_value(key, value);
    for (const auto& t : (*file)->tensors()) {
      std::vector<uint8_t> bytes(t.data, t.data + t.bytes);
      if (t.name.rfind("blk.2.", 0) == 0 && t.dims.size() == 2) {
        float* v = reinterpret_cast<float*>(bytes.data());
        for (int64_t i = 0; i < t.element_count(); i += 100) v[i] *= 30.0f;
      }
      writer.add_tensor(t.name, DType::F32, t.dims, std::move(bytes));
    }
    EXPECT_TRUE(writer.write(dir + "/outliers.gguf").is_ok());
  }
  return dir + "/outliers.gguf";
}

TEST(OwlModel, BlockWithOutliersGetsLessSparsity) {
  const std::string dir = testing::temp_dir();
  write_model_with_outliers(dir);
  auto model = Model::load(dir + "/outliers.gguf");
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  auto text = read_text_file(testing::data_path("tinyshakespeare.txt"));
  ASSERT_TRUE(text.is_ok());
  std::vector<int32_t> tokens = model.value()->tokenizer().encode(text->substr(0, 2000), true, false);
  tokens.resize(256);
  auto ratios = compress::owl_outlier_ratios(*model.value(), tokens, 128, 2, 5.0, nullptr);
  ASSERT_TRUE(ratios.is_ok()) << ratios.status().message();
  ASSERT_EQ(ratios->size(), 3u);
  EXPECT_GT((*ratios)[2], 2.0 * (*ratios)[0]);
  EXPECT_GT((*ratios)[2], 2.0 * (*ratios)[1]);
  EXPECT_GT((*ratios)[2], 0.005);  // most of the planted 1% are found

  auto sparsity = compress::owl_sparsities(*ratios, 0.7, compress::OwlOptions{});
  ASSERT_TRUE(sparsity.is_ok());
  EXPECT_NEAR(std::accumulate(sparsity->begin(), sparsity->end(), 0.0) / 3.0, 0.7, 1e-12);
  EXPECT_LT((*sparsity)[2], (*sparsity)[0]);
  EXPECT_LT((*sparsity)[2], (*sparsity)[1]);
  EXPECT_NEAR(*std::max_element(sparsity->begin(), sparsity->end()) - (*sparsity)[2], 0.16, 1e-12);
}

class OwlPrune : public ::testing::TestWithParam<const char*> {};

TEST_P(OwlPrune, OutlierBlockIsPrunedLessAtTheTargetMean) {
  const std::string dir = testing::temp_dir();
  const std::string in = write_model_with_outliers(dir), out = dir + "/owl.gguf";
  const auto r = testing::run_command(testing::shell_quote(testing::frugal_binary()) + " prune -m " + testing::shell_quote(in) + " -o " +
                                      testing::shell_quote(out) + " --method " + GetParam() + " --sparsity 0.6 --owl --calib-tokens 512");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("owl per-layer sparsity"), std::string::npos) << r.err;
  auto file = GgufFile::open(out);
  ASSERT_TRUE(file.is_ok());
  std::vector<double> zeros(3, 0.0), weights(3, 0.0);
  for (const GgufTensorInfo& t : (*file)->tensors()) {
    const auto block = names::parse_block_matrix(t.name);
    if (!block) continue;
    zeros[block->first] += static_cast<double>(count_zeros(t));
    weights[block->first] += static_cast<double>(t.element_count());
  }
  std::vector<double> fraction(3);
  for (int b = 0; b < 3; ++b) fraction[b] = zeros[b] / weights[b];
  EXPECT_LT(fraction[2], fraction[0] - 0.05);
  EXPECT_LT(fraction[2], fraction[1] - 0.05);
  // Every block matrix has the same number of weights per block, so the mean is the target, up to
  // rounding each row's count to whole weights (1/64 of a row at most).
  EXPECT_NEAR((fraction[0] + fraction[1] + fraction[2]) / 3.0, 0.6, 1.0 / 64);
}

INSTANTIATE_TEST_SUITE_P(Methods, OwlPrune, ::testing::Values("wanda", "sparsegpt"));

}  // namespace
}  // namespace frugal
