// OWL, Outlier Weighed Layerwise sparsity (Yin et al. 2023, arXiv:2310.05175): a non-uniform
// sparsity per decoder block for Wanda or SparseGPT, set by how many outliers the block's
// activation-weighted weights have, with the same average sparsity as the uniform target.
//
// Outlier ratio of a block: the fraction of its Wanda scores |W_ij| * ||X_j|| (over all of its
// matrices together) that exceed M times their mean (M = 5 in the paper). Ratios D_l are mapped
// linearly onto [0, 2*lambda], then shifted so their mean is the target density 1 - S; block l is
// pruned to 1 - that density. Blocks with more outliers keep more weights; sparsities span
// S - lambda .. S + lambda (lambda = 0.08 for LLaMA in the paper). Every block of a decoder has the
// same number of weights, so the mean of the block sparsities is the model's sparsity.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/model.h"

namespace frugal::compress {

struct OwlOptions {
  double outlier_multiple = 5.0;  // M: a score above M x the block mean is an outlier
  double lambda = 0.08;           // half-width of the sparsity range around the target
};

// Accumulates one block's outlier ratio over its matrices: add every matrix's scores (any count),
// then ratio(). The mean is over all scores of the block, as in the paper's code.
class OutlierCounter {
 public:
  // Scores of a rows x cols matrix: |W_ij| * column_norms[j] (column_norms = ||X_j||_2 of the
  // matrix input over the calibration tokens).
  void add_wanda_scores(const float* w, int64_t rows, int64_t cols, const float* column_norms);
  // Fraction of the added scores above outlier_multiple x their mean (0 when none were added).
  double ratio(double outlier_multiple) const;

 private:
  std::vector<float> scores_;
};

// Per-block sparsities from outlier ratios, mean exactly `target` (clamped to [0, 1] first, then
// re-balanced over the unclamped blocks if clamping moved the mean). Errors: target outside (0, 1),
// lambda negative, no blocks.
Result<std::vector<double>> owl_sparsities(const std::vector<double>& outlier_ratios, double target, const OwlOptions& options);

// The outlier ratio of every block of the dense `model` on calibration tokens (sequences of
// sequence_length; the stored weights, scored against the inputs the blocks really receive):
// one pass through the model's own blocks (compress/calibration.h). on_layer(done, total).
Result<std::vector<double>> owl_outlier_ratios(const Model& model, const std::vector<int32_t>& tokens, int64_t sequence_length,
                                               int n_threads, double outlier_multiple,
                                               const std::function<void(int64_t, int64_t)>& on_layer);

}  // namespace frugal::compress

namespace frugal {

struct PruneOptions;

// OWL's per-block sparsities for pruning `model_path` with `options` (wanda or sparsegpt,
// unstructured, options.sparsity the target; the calibration text and tokens of the options), to
// be set as options.layer_sparsity (compress/prune_model.h). on_layer(done, total).
Result<std::vector<double>> owl_layer_sparsity(const std::string& model_path, const PruneOptions& options,
                                               const compress::OwlOptions& owl, const std::function<void(int64_t, int64_t)>& on_layer);

}  // namespace frugal
