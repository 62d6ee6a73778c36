// collect_structured_statistics: the calibration tokens go through the model's own decoder blocks
// (compress/calibration.h) with an observer that sums the squares of the FFN's inputs; the
// residual stream before and after each block gives its Block Influence and angular distance.
#include <algorithm>
#include <cmath>

#include "compress/calibration.h"
#include "compress/structured_prune.h"

namespace frugal {
namespace {

// Sums x^2 per column of the attention heads' outputs (read by attn_output), the FFN input (read
// by gate/up) and the FFN hidden activation (down).
class SquareSums : public BlockObserver {
 public:
  SquareSums(StructuredStatistics& stats, ThreadPool& pool) : stats_(stats), pool_(pool) {}
  Status on_input(int64_t layer, BlockInput input, float* x, int64_t n, int64_t cols) override {
    if (input == BlockInput::kAttention) return Status::ok();
    std::vector<double>& sums = (input == BlockInput::kAttentionOutput ? stats_.attention_output_square_sums
                                 : input == BlockInput::kFfn           ? stats_.ffn_input_square_sums
                                                                       : stats_.ffn_hidden_square_sums)[layer];
    sums.assign(cols, 0.0);
    // Columns are split across threads, so every sum has one owner.
    pool_.parallel_for(cols, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = 0; t < n; ++t) {
        const float* row = x + t * cols;
        for (int64_t j = begin; j < end; ++j) sums[j] += static_cast<double>(row[j]) * row[j];
      }
    });
    return Status::ok();
  }

 private:
  StructuredStatistics& stats_;
  ThreadPool& pool_;
};

}  // namespace

Result<StructuredStatistics> collect_structured_statistics(const Model& model, const std::vector<int32_t>& tokens, int64_t chunk,
                                                           int n_threads, const std::function<void(int64_t, int64_t)>& on_layer) {
  const ModelConfig& c = model.config();
  FRUGAL_ASSIGN_OR_RETURN(auto pass, compress::CalibrationPass::make(model, tokens, chunk, n_threads));
  const int64_t n = pass->tokens(), embd = c.n_embd;
  StructuredStatistics stats;
  stats.tokens = n;
  stats.block_influence.assign(c.n_layer, 0.0);
  stats.angular_distance.assign(c.n_layer, 0.0);
  stats.attention_output_square_sums.resize(c.n_layer);
  stats.ffn_input_square_sums.resize(c.n_layer);
  stats.ffn_hidden_square_sums.resize(c.n_layer);
  SquareSums observer(stats, pass->pool());
  std::vector<float> before(static_cast<size_t>(n * embd));
  std::vector<double> cosine(n);
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    std::copy(pass->hidden(), pass->hidden() + n * embd, before.begin());
    FRUGAL_RETURN_IF_ERROR(pass->layer(layer, &observer));
    const float* after = pass->hidden();
    // BI = 1 - E[cos(x_in, x_out)] (ShortGPT); angular distance arccos(cos) / pi (Gromov et al.).
    pass->pool().parallel_for(n, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        double dot = 0, a2 = 0, b2 = 0;
        for (int64_t i = 0; i < embd; ++i) {
          const double a = before[t * embd + i], b = after[t * embd + i];
          dot += a * b;
          a2 += a * a;
          b2 += b * b;
        }
        cosine[t] = a2 > 0 && b2 > 0 ? std::clamp(dot / std::sqrt(a2 * b2), -1.0, 1.0) : 1.0;
      }
    });
    for (int64_t t = 0; t < n; ++t) {
      stats.block_influence[layer] += (1.0 - cosine[t]) / static_cast<double>(n);
      stats.angular_distance[layer] += std::acos(cosine[t]) / M_PI / static_cast<double>(n);
    }
    if (on_layer) on_layer(layer + 1, c.n_layer);
  }
  return stats;
}

}  // namespace frugal
