// OWL layer-wise sparsities (see owl.h), following the paper's reference code: outlier ratio
// = count(score > M * mean) / count per block; ratios min-max scaled to [0, 2*lambda] and centred
// on the target density.
#include "compress/owl.h"

#include "compress/calibration.h"
#include "compress/prune_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace frugal::compress {

void OutlierCounter::add_wanda_scores(const float* w, int64_t rows, int64_t cols, const float* column_norms) {
  const size_t start = scores_.size();
  scores_.resize(start + static_cast<size_t>(rows * cols));
  float* out = scores_.data() + start;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) out[r * cols + j] = std::fabs(w[r * cols + j]) * column_norms[j];
  }
}

double OutlierCounter::ratio(double outlier_multiple) const {
  if (scores_.empty()) return 0.0;
  double sum = 0;
  for (float s : scores_) sum += s;
  const double threshold = outlier_multiple * sum / static_cast<double>(scores_.size());
  int64_t above = 0;
  for (float s : scores_) above += s > threshold ? 1 : 0;
  return static_cast<double>(above) / static_cast<double>(scores_.size());
}

Result<std::vector<double>> owl_sparsities(const std::vector<double>& ratios, double target, const OwlOptions& options) {
  if (!(target > 0.0 && target < 1.0)) return Status::error("OWL needs a sparsity between 0 and 1, got " + std::to_string(target));
  if (!(options.lambda >= 0.0 && options.lambda < 1.0)) return Status::error("OWL's lambda must be in [0, 1), got " + std::to_string(options.lambda));
  if (ratios.empty()) return Status::error("OWL needs at least one block");
  const size_t n = ratios.size();
  const auto [min_it, max_it] = std::minmax_element(ratios.begin(), ratios.end());
  const double span = *max_it - *min_it;
  std::vector<double> density(n);
  for (size_t l = 0; l < n; ++l) density[l] = span > 0 ? (ratios[l] - *min_it) / span * 2.0 * options.lambda : 0.0;
  const double mean = std::accumulate(density.begin(), density.end(), 0.0) / static_cast<double>(n);
  std::vector<double> sparsity(n);
  for (size_t l = 0; l < n; ++l) sparsity[l] = std::clamp(1.0 - (density[l] - mean + (1.0 - target)), 0.0, 1.0);
  // Clamping at 0 or 1 moves the mean: spread the difference over the blocks not at a bound.
  for (size_t round = 0; round < n; ++round) {
    const double missing = target * static_cast<double>(n) - std::accumulate(sparsity.begin(), sparsity.end(), 0.0);
    if (std::fabs(missing) < 1e-12) break;
    size_t free = 0;
    for (double s : sparsity) free += (missing > 0 ? s < 1.0 : s > 0.0) ? 1 : 0;
    if (free == 0) break;
    for (double& s : sparsity) {
      if (missing > 0 ? s < 1.0 : s > 0.0) s = std::clamp(s + missing / static_cast<double>(free), 0.0, 1.0);
    }
  }
  return sparsity;
}

namespace {

// Adds the Wanda scores of every matrix reading an input to the block's counter.
class OutlierObserver : public BlockObserver {
 public:
  OutlierObserver(const Model& model, OutlierCounter& counter) : model_(model), counter_(counter) {}
  Status on_input(int64_t layer, BlockInput input, float* x, int64_t n, int64_t cols) override {
    std::vector<double> sums(cols, 0.0);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < cols; ++j) sums[j] += static_cast<double>(x[t * cols + j]) * x[t * cols + j];
    }
    std::vector<float> norms(cols);
    for (int64_t j = 0; j < cols; ++j) norms[j] = static_cast<float>(std::sqrt(sums[j]));
    for (names::BlockMatrix m : matrices_reading(input)) {
      const FloatMatrix w = FloatMatrix::dequantize(model_.layers()[layer].matrix(m));
      counter_.add_wanda_scores(w.values.data(), w.rows, w.cols, norms.data());
    }
    return Status::ok();
  }

 private:
  const Model& model_;
  OutlierCounter& counter_;
};

}  // namespace

Result<std::vector<double>> owl_outlier_ratios(const Model& model, const std::vector<int32_t>& tokens, int64_t sequence_length,
                                               int n_threads, double outlier_multiple,
                                               const std::function<void(int64_t, int64_t)>& on_layer) {
  if (!(outlier_multiple > 0.0)) return Status::error("OWL's outlier multiple M must be positive");
  FRUGAL_ASSIGN_OR_RETURN(auto pass, CalibrationPass::make(model, tokens, sequence_length, n_threads));
  const int64_t n_layer = model.config().n_layer;
  std::vector<double> ratios(n_layer);
  for (int64_t layer = 0; layer < n_layer; ++layer) {
    // One block's scores at a time (a few million floats), released before the next block.
    OutlierCounter counter;
    OutlierObserver observer(model, counter);
    FRUGAL_RETURN_IF_ERROR(pass->layer(layer, &observer));
    ratios[layer] = counter.ratio(outlier_multiple);
    if (on_layer) on_layer(layer + 1, n_layer);
  }
  return ratios;
}

}  // namespace frugal::compress

namespace frugal {

Result<std::vector<double>> owl_layer_sparsity(const std::string& model_path, const PruneOptions& options,
                                               const compress::OwlOptions& owl, const std::function<void(int64_t, int64_t)>& on_layer) {
  if (options.method != "wanda" && options.method != "sparsegpt") {
    return Status::error("OWL sets per-layer sparsities for wanda or sparsegpt, not " + options.method);
  }
  if (options.pattern != "unstructured") return Status::error("OWL needs the unstructured pattern (N:M fixes the sparsity of every group)");
  if (!(options.sparsity > 0.0 && options.sparsity < 1.0)) return Status::error("OWL needs --sparsity between 0 and 1");
  FRUGAL_ASSIGN_OR_RETURN(auto model, Model::load(model_path));
  FRUGAL_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens,
                          compress::read_calibration_tokens(*model, options.calibration_path, options.calibration_tokens));
  FRUGAL_ASSIGN_OR_RETURN(const std::vector<double> ratios,
                          compress::owl_outlier_ratios(*model, tokens, std::min<int64_t>(options.sequence_length, options.calibration_tokens),
                                                       options.n_threads, owl.outlier_multiple, on_layer));
  return compress::owl_sparsities(ratios, options.sparsity, owl);
}

}  // namespace frugal
