// Calibrated, layer-by-layer quantization of a whole model with GPTQ (Frantar et al. 2022,
// arXiv:2210.17323, §4 "true sequential"): calibration text runs through the model one block at a
// time, and every matrix is quantized on inputs produced by the already-quantized matrices before
// it, so later layers learn to compensate the earlier layers' rounding.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "compress/awq.h"
#include "compress/gptq.h"
#include "model/model.h"

namespace frugal {

struct EncodedTensor {
  DType type;
  std::vector<uint8_t> bytes;
  std::vector<int64_t> dims;  // empty: the dims of the source tensor of the same name
};

enum class CalibratedMethod {
  kGptq,  // GPTQ on every matrix
  // AWQ (Lin et al. 2023, arXiv:2306.00978): per-input-channel scales searched on the layer's
  // activations and folded into the preceding RMSNorm (Q, K, V; gate, up) or into the up
  // projection's rows (down), then a clipping search. The attention output projection has no
  // foldable predecessor under grouped-query attention and gets an activation-weighted
  // round-to-nearest fit instead.
  kAwq,
  // W8A8 (see compress/w8a8.h): SmoothQuant folds per-channel smoothing factors into the RMSNorms
  // (Q, K, V; gate, up) and up's rows (down); kW8A8 is the same int8 layout without smoothing (the
  // baseline SmoothQuant is measured against); kLlmInt8 keeps outlier input columns in 16-bit.
  // All store vector-wise int8 weights and mark the file for per-token int8 activations.
  kSmoothQuant,
  kW8A8,
  kLlmInt8,
};

struct CalibratedOptions {
  CalibratedMethod method = CalibratedMethod::kGptq;
  int64_t chunk = 512;  // tokens per calibration sequence (attention stays within a sequence)
  int n_threads = 2;
  compress::GptqOptions gptq;
  compress::AwqOptions awq;
  float smooth_alpha = 0.5f;        // SmoothQuant's migration strength
  float outlier_threshold = 6.0f;   // LLM.int8(): |x| at which an input column is an outlier
  // GPTQ/AWQ: what each matrix (GGUF name, row length) is quantized to.
  std::function<compress::QuantTarget(const std::string& name, int64_t cols)> target_for;
};

// The stored type and bytes of a quantized matrix (a GGML format, or a frugal generic group type).
EncodedTensor encode_quantized(const compress::QuantizedMatrix& m);

// Quantizes every attention and FFN matrix of `model` with options.method on `calibration` tokens
// (a multiple of options.chunk is used). `on_layer(done, total)` reports progress in estimated
// millions of multiply-adds (once with done = 0, then after each group of matrices). Returns the
// encoded tensors by GGUF name; AWQ and SmoothQuant also return the RMSNorm weights they rescaled
// (F32), LLM.int8() the outlier tensors NAME.outlier_columns (F32 indices) and
// NAME.outlier_weight (F16, rows x n) of matrix NAME.weight.
// With `sink`, after each layer the results so far are handed to it with the number of layers
// done; it may move them out (quantize writes them to disk), so the returned map holds only what
// it left and memory stays at one layer's results (issue 14).
using CalibratedLayerSink = std::function<Status(std::map<std::string, EncodedTensor>&, int64_t layers_done)>;
Result<std::map<std::string, EncodedTensor>> calibrated_quantize_model(const Model& model, const std::vector<int32_t>& calibration,
                                                                 const CalibratedOptions& options,
                                                                 const std::function<void(int64_t, int64_t)>& on_layer,
                                                                 const CalibratedLayerSink& sink = nullptr);

}  // namespace frugal
