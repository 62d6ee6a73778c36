// AWQ, activation-aware weight quantization (Lin et al. 2023, arXiv:2306.00978): scale the input
// channels that carry large activations up before quantizing (and the inputs down by the same
// factor), searching the scale exponent and then per-group clipping for the least output error.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "compress/format_grid.h"

namespace frugal::compress {

// One weight matrix (rows x cols, row-major) fed by the shared input.
struct AwqWeight {
  const float* data = nullptr;
  int64_t rows = 0;
};

struct AwqOptions {
  // Exponents alpha = k / (alpha_grid - 1), k = 0 .. alpha_grid - 1, for s = mean|X_col|^alpha;
  // alpha = 0 (s = 1) is plain round-to-nearest, so the search never loses to it.
  int alpha_grid = 20;
  // Clipping search (llm-awq auto_clip): per output row and group, shrink the group's range to
  // ratio * max|w| for ratio = 1 - k / clip_grid down to 1 - max_shrink, keep the best.
  bool search_clip = true;
  int clip_grid = 20;
  double max_shrink = 0.5;
  // Quantizer applied to W * s: kMinMax = round-to-nearest as in the paper (the traits' encoder
  // for formats); kSearch = the importance-weighted grid search, with importance E[x^2] / s^2.
  GridFit fit = GridFit::kMinMax;
  // Threads for the searches (rows of the weights are split over them); not owned, null = the
  // calling thread only. The result is the same for any thread count.
  ThreadPool* pool = nullptr;
};

struct AwqResult {
  // s per input column: the weights were quantized as W diag(s); the caller multiplies the
  // preceding RMSNorm weight (or the previous linear layer's output rows) by 1 / s.
  std::vector<float> scales;
  float alpha = 0.0f;
  // Q(W diag(s)) per weight, clipping applied; values are in the scaled domain, so the layer
  // computes (X / s) Q^T.
  std::vector<QuantizedMatrix> quantized;
  // Output errors summed over weights, rows and tokens: sum ||X W^T - (X / s) Q^T||^2.
  double reference = 0.0;     // sum ||X W^T||^2, to turn the errors into relative ones
  double error_rtn = 0.0;     // the same quantizer without scaling or clipping
  double error_scaled = 0.0;  // with the chosen scales, before clipping
  double error = 0.0;         // final (scales and, if it helped, clipping)
  bool clipped = false;       // clipping lowered the error and was applied
};

// Runs AWQ for weights that share one input with `cols` columns, given calibration inputs x
// (tokens x cols, row-major). Fails if the row length does not fit the target or inputs are empty.
Result<AwqResult> awq_quantize(std::span<const AwqWeight> weights, int64_t cols, const float* x,
                               int64_t tokens, const QuantTarget& target, const AwqOptions& options = {});

}  // namespace frugal::compress
