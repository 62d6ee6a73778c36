// Calibration text run through a model's own decoder blocks (model/decoder_block.h), one layer at
// a time, so a compressor can look at — and replace — each layer's matrices on the outputs of the
// already-compressed layers before it (GPTQ's "true sequential" order, Frantar et al. 2022 §4;
// SparseGPT and Wanda, Frantar & Alistarh 2023, Sun et al. 2023).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <memory>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "model/decoder_block.h"
#include "model/model.h"

namespace frugal::compress {

// The first max_tokens tokens of the calibration text at `path` (never the evaluation text), as
// `model` tokenizes it; an error names an unreadable or empty file.
Result<std::vector<int32_t>> read_calibration_tokens(const Model& model, const std::string& path, int64_t max_tokens);

class CalibrationPass {
 public:
  // Embeds the first whole multiple of sequence_length of `tokens` (independent sequences; attention
  // stays within each). Fails when fewer than sequence_length tokens are given.
  static Result<std::unique_ptr<CalibrationPass>> make(const Model& model, const std::vector<int32_t>& tokens,
                                                       int64_t sequence_length, int n_threads);

  int64_t tokens() const { return n_; }
  int64_t sequence_length() const { return sequence_length_; }
  const Model& model() const { return model_; }
  ThreadPool& pool() { return pool_; }

  // Runs one stage of block `layer` over all tokens, updating the hidden states. The observer sees
  // the stage's matmul inputs and may substitute its matrices (see BlockObserver).
  Status attention(int64_t layer, BlockObserver* observer = nullptr);
  Status ffn(int64_t layer, BlockObserver* observer = nullptr);
  Status layer(int64_t layer, BlockObserver* observer = nullptr);

  // The residual stream: tokens() rows of n_embd floats.
  const float* hidden() const { return hidden_.data(); }
  float* hidden() { return hidden_.data(); }

 private:
  CalibrationPass(const Model& model, int64_t n, int64_t sequence_length, int n_threads);

  const Model& model_;
  int64_t n_ = 0;
  int64_t sequence_length_ = 0;
  ThreadPool pool_;
  DecoderBlock block_;
  BlockWorkspace workspace_;
  std::vector<float> hidden_;
  std::vector<uint16_t> keys_, values_;  // this layer's keys/values of every token (half, as the KV cache)
};

// A float copy of a matrix and a WeightMatrix view of it (the weights a compressor is working on).
struct FloatMatrix {
  std::vector<float> values;
  int64_t rows = 0, cols = 0;

  static FloatMatrix dequantize(const WeightMatrix& w);
  // An F32 view of `values` (invalidated when `values` is reallocated).
  WeightMatrix view() const;
};

// The observer of a compressor working on one layer at a time: the layer's seven matrices as float
// copies, substituted for the stored ones in the forward pass, and a hook at each matmul input
// (where the compressor collects statistics and replaces the values of the matrices reading it).
class WorkingLayer : public BlockObserver {
 public:
  using InputHook = std::function<Status(BlockInput input, float* x, int64_t n, int64_t cols)>;

  // Dequantizes the seven matrices of `layer`.
  void load(const Model& model, int64_t layer);
  int64_t layer() const { return layer_; }
  FloatMatrix& matrix(names::BlockMatrix m) { return matrices_[static_cast<size_t>(m)]; }
  const std::string& name(names::BlockMatrix m) const { return names_[static_cast<size_t>(m)]; }
  void set_hook(InputHook hook) { hook_ = std::move(hook); }

  Status on_input(int64_t layer, BlockInput input, float* x, int64_t n, int64_t cols) override;
  const WeightMatrix& weights(int64_t layer, names::BlockMatrix matrix, const WeightMatrix& stored) override;

 private:
  int64_t layer_ = -1;
  std::array<FloatMatrix, 7> matrices_;
  std::array<std::string, 7> names_;
  std::array<WeightMatrix, 7> views_;
  InputHook hook_;
};

}  // namespace frugal::compress
