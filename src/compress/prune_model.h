// frugal prune: zeroes a fraction of every decoder-block matrix of a GGUF model with magnitude,
// Wanda or SparseGPT (compress/prune.h), layer by layer on the outputs of the already-pruned
// layers (calibration text run through the model's own blocks, compress/calibration.h), and
// writes OUT atomically.
//
// Storage is dense (the zeros are stored, nothing is skipped at run time yet): each pruned matrix
// keeps its input type when that type stores 0 exactly (F32, F16, BF16, Q8_0, Q4_0, Q5_0) and is
// re-encoded in Q8_0 otherwise (Q4_1, K-quants: their block minimum makes 0 inexact), unless
// --format names a type. SparseGPT with --bits (or a quantized --format) prunes and quantizes in
// one sweep (joint mode; zeros stay exact on symmetric grids).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "compress/calibrated_quantize.h"
#include "compress/prune.h"
#include "model/model.h"

namespace frugal {

struct PruneOptions {
  std::string method = "magnitude";  // a MethodKind::kPrune entry of compress/methods.h
  // Fraction of the weights of each block matrix set to zero; < 0 with an N:M pattern: N/M.
  double sparsity = -1.0;
  std::string pattern = "unstructured";  // or N:M ("2:4", "4:8")
  // Per-layer sparsity (non-uniform schedules such as OWL): when not empty, one value per decoder
  // block replaces `sparsity` for that block's matrices (unstructured pattern only).
  std::vector<double> layer_sparsity;
  std::string format;  // storage type of the pruned matrices (see above); empty = automatic
  // SparseGPT joint pruning + quantization: bits (2..8) and group as for frugal quantize (0 = off).
  int bits = 0;
  int64_t group = 32;
  bool symmetric = false;
  std::string calibration_path;  // any text but the evaluation text
  // SparseGPT's weight update overfits a small calibration set (on SmolLM2 with 4096 Shakespeare
  // tokens and the paper's dampening of 0.01, its layer error on held-out WikiText exceeded
  // Wanda's, while on the calibration text it was 2-5x lower): more tokens and a stronger
  // dampening by default.
  int64_t calibration_tokens = 16384;
  int64_t sequence_length = 512;  // tokens per calibration sequence
  double percdamp = 0.1;          // SparseGPT's Hessian dampening (fraction of mean diag H)
  int n_threads = 2;
};

// What the options resolve to, checked before any file is read.
struct PrunePlan {
  std::string method;
  compress::SparsityPattern pattern;
  double sparsity = 0.0;               // uniform sparsity
  std::vector<double> layer_sparsity;  // empty or one per layer
  bool needs_calibration = false;
  bool joint_quantization = false;
  std::string description;  // "sparsegpt 50% unstructured", "+ q4_0"

  static Result<PrunePlan> make(const PruneOptions& options);
  // Sparsity of block `layer`'s matrices.
  double sparsity_of(int64_t layer) const { return layer_sparsity.empty() ? sparsity : layer_sparsity[static_cast<size_t>(layer)]; }
};

struct PruneReport {
  int64_t tensors_pruned = 0;
  int64_t weights_in_pruned = 0;  // elements of the pruned matrices
  int64_t zeros = 0;              // of them stored as exact zeros
  size_t bytes_in = 0, bytes_out = 0;
  double bits_per_weight = 0;
  double seconds = 0;
  std::string description;
};

// The pruned (and possibly quantized) block matrices of `model`, encoded, by GGUF name.
// `calibration` may be empty for methods that need none. `on_layer(done, total)` reports progress.
// With `sink`, each layer's results are handed to it once the layer is done (it may move them
// out, so the returned map holds only what it left: memory stays at one layer, issue 14).
using PrunedLayerSink = std::function<Status(std::map<std::string, EncodedTensor>&)>;
Result<std::map<std::string, EncodedTensor>> prune_block_matrices(const Model& model, const std::vector<int32_t>& calibration,
                                                                  const PruneOptions& options, const PrunePlan& plan,
                                                                  const std::function<void(int64_t, int64_t)>& on_layer,
                                                                  const PrunedLayerSink& sink = nullptr);

// Reads IN, prunes, writes OUT (atomically). `on_progress(done, total, what)` reports progress.
Result<PruneReport> prune_model(const std::string& input, const std::string& output, const PruneOptions& options,
                                const std::function<void(int64_t, int64_t, const std::string&)>& on_progress);

// Exact zeros among a stored tensor's elements (decoded through its type).
int64_t count_zeros(const GgufTensorInfo& tensor);

}  // namespace frugal
