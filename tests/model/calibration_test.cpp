// Model tests of the observed decoder block: a calibration pass with no hooks reproduces the
// runtime's hidden states (Llama and Gemma 3 tiny models), and an observer sees every matmul
// input and can substitute a layer's weights.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "compress/calibration.h"
#include "support/test_support.h"

namespace frugal {
namespace {

struct Case {
  const char* name;
  bool gemma3;
  DType type;
};

class HookFreeCalibration : public ::testing::TestWithParam<Case> {};

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

TEST_P(HookFreeCalibration, ReproducesRuntimeHiddenStates) {
  const Case c = GetParam();
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.gemma3 = c.gemma3;
  o.weight_type = c.type;
  o.n_layer = c.gemma3 ? 3 : 2;  // Gemma: two windowed layers and one global one
  ASSERT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto loaded = Model::load(path);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
  std::shared_ptr<const Model> model = loaded.value();
  const ModelConfig& config = model->config();
  ASSERT_EQ(config.architecture, c.gemma3 ? "gemma3" : "llama");
  if (c.gemma3) {
    ASSERT_TRUE(config.qk_norm && config.post_norms && config.layer_is_windowed[0] && !config.layer_is_windowed[1]);
  }

  // Three sequences of 20 tokens (longer than Gemma's window of 8) plus 5 left-over tokens.
  const int64_t length = 20, n_seq = 3;
  const std::vector<int32_t> tokens = random_tokens(length * n_seq + 5, config.n_vocab, 7);
  auto pass = compress::CalibrationPass::make(*model, tokens, length, 2);
  ASSERT_TRUE(pass.is_ok()) << pass.status().message();
  ASSERT_EQ((*pass)->tokens(), length * n_seq);
  for (int64_t layer = 0; layer < config.n_layer; ++layer) {
    // The stage-by-stage path (as the compressors use it) and the fused path must agree.
    if (layer % 2 == 0) {
      ASSERT_TRUE((*pass)->attention(layer).is_ok());
      ASSERT_TRUE((*pass)->ffn(layer).is_ok());
    } else {
      ASSERT_TRUE((*pass)->layer(layer).is_ok());
    }
  }

  for (int64_t s = 0; s < n_seq; ++s) {
    TransformerOptions options;
    options.n_ctx = length;
    options.n_batch = length;
    options.n_threads = 2;
    Transformer runtime(model, options);
    ASSERT_TRUE(runtime.evaluate(tokens.data() + s * length, length).is_ok());
    double max_diff = 0.0, max_abs = 0.0;
    for (int64_t t = 0; t < length; ++t) {
      const float* expected = runtime.hidden_state(t);
      const float* actual = (*pass)->hidden() + (s * length + t) * config.n_embd;
      for (int64_t i = 0; i < config.n_embd; ++i) {
        max_diff = std::max(max_diff, static_cast<double>(std::fabs(expected[i] - actual[i])));
        max_abs = std::max(max_abs, static_cast<double>(std::fabs(expected[i])));
      }
    }
    // The same kernels on the same rows: identical up to thread scheduling, which does not change
    // any per-row sum.
    EXPECT_LE(max_diff, 1e-6 * max_abs) << c.name << " sequence " << s;
    EXPECT_GT(max_abs, 0.1);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, HookFreeCalibration,
                         ::testing::Values(Case{"llama_f32", false, DType::F32}, Case{"llama_q8_0", false, DType::Q8_0},
                                           Case{"gemma3_f32", true, DType::F32}, Case{"gemma3_q4_0", true, DType::Q4_0}),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// Records every input it sees and substitutes zero matrices for down projections: the FFN then
// adds only post_norm(0) = 0, so the hidden state equals the one after attention.
class RecordingObserver : public BlockObserver {
 public:
  Status on_input(int64_t layer, BlockInput input, float* x, int64_t n, int64_t cols) override {
    seen.push_back({layer, input, n, cols, x[0]});
    return Status::ok();
  }
  const WeightMatrix& weights(int64_t layer, names::BlockMatrix matrix, const WeightMatrix& stored) override {
    (void)layer;
    if (matrix != names::BlockMatrix::kDown) return stored;
    zeros.assign(static_cast<size_t>(stored.rows * stored.cols), 0.0f);
    zero.traits = &type_traits(DType::F32);
    zero.data = reinterpret_cast<const uint8_t*>(zeros.data());
    zero.rows = stored.rows;
    zero.cols = stored.cols;
    zero.row_bytes = static_cast<size_t>(stored.cols) * sizeof(float);
    return zero;
  }
  struct Seen {
    int64_t layer;
    BlockInput input;
    int64_t n, cols;
    float first;
  };
  std::vector<Seen> seen;
  std::vector<float> zeros;
  WeightMatrix zero;
};

TEST(BlockObserver, SeesEveryInputAndSubstitutesWeights) {
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  testing::TinyModelOptions o;
  ASSERT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok());
  const ModelConfig& config = (*model)->config();
  const std::vector<int32_t> tokens = random_tokens(32, config.n_vocab, 3);
  auto pass = compress::CalibrationPass::make(**model, tokens, 16, 2);
  ASSERT_TRUE(pass.is_ok());
  RecordingObserver observer;
  ASSERT_TRUE((*pass)->attention(0, &observer).is_ok());
  const std::vector<float> after_attention((*pass)->hidden(), (*pass)->hidden() + 32 * config.n_embd);
  ASSERT_TRUE((*pass)->ffn(0, &observer).is_ok());
  ASSERT_EQ(observer.seen.size(), 4u);
  const BlockInput order[] = {BlockInput::kAttention, BlockInput::kAttentionOutput, BlockInput::kFfn, BlockInput::kFfnHidden};
  const int64_t cols[] = {config.n_embd, config.q_dim(), config.n_embd, config.n_ff};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(observer.seen[i].input, order[i]);
    EXPECT_EQ(observer.seen[i].n, 32);
    EXPECT_EQ(observer.seen[i].cols, cols[i]);
    EXPECT_NE(observer.seen[i].first, 0.0f);
  }
  for (int64_t i = 0; i < 32 * config.n_embd; ++i) ASSERT_EQ((*pass)->hidden()[i], after_attention[static_cast<size_t>(i)]);

  // An error from the observer stops the pass with its message.
  class Failing : public BlockObserver {
    Status on_input(int64_t, BlockInput, float*, int64_t, int64_t) override { return Status::error("stop here"); }
  } failing;
  const Status s = (*pass)->layer(1, &failing);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.message(), "stop here");
}

}  // namespace
}  // namespace frugal
