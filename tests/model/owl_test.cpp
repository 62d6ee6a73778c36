// OWL on a tiny random model: the block whose weights hold outliers gets the highest outlier ratio
// and the lowest sparsity, and the block sparsities average to the target.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "compress/owl.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"

namespace frugal {
namespace {

TEST(OwlModel, BlockWithOutliersGetsLessSparsity) {
  const std::string dir = testing::temp_dir();
  testing::TinyModelOptions o;
  o.n_layer = 3;
  ASSERT_TRUE(testing::write_tiny_model(dir + "/tiny.gguf", o).is_ok());
  // Block 2 (the last, so no later block sees its larger outputs) gets 1% of its weights multiplied
  // by 30 (outliers at any input scale).
  {
    auto file = GgufFile::open(dir + "/tiny.gguf");
    ASSERT_TRUE(file.is_ok());
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
    ASSERT_TRUE(writer.write(dir + "/outliers.gguf").is_ok());
  }
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

}  // namespace
}  // namespace frugal
