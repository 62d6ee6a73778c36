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
};

enum class CalibratedMethod {
  kGptq,  // GPTQ on every matrix
  // AWQ (Lin et al. 2023, arXiv:2306.00978): per-input-channel scales searched on the layer's
  // activations and folded into the preceding RMSNorm (Q, K, V; gate, up) or into the up
  // projection's rows (down), then a clipping search. The attention output projection has no
  // foldable predecessor under grouped-query attention and gets an activation-weighted
  // round-to-nearest fit instead.
  kAwq,
};

struct CalibratedOptions {
  CalibratedMethod method = CalibratedMethod::kGptq;
  int64_t chunk = 512;  // tokens per calibration sequence (attention stays within a sequence)
  int n_threads = 2;
  compress::GptqOptions gptq;
  compress::AwqOptions awq;
};

// Type each matrix is stored in: `target`, or llama-quantize's 32-element fallback when the row
// length is not a multiple of the target's block (K-quants on 576-wide rows).
DType storage_type_for(DType target, int64_t cols);

// Quantizes every attention and FFN matrix of `model` into `target` (per-tensor fallback as above)
// with GPTQ or AWQ on `calibration` tokens (a multiple of options.chunk is used). `on_layer(done,
// total)` reports progress. Returns the encoded tensors by GGUF name (AWQ also returns the
// RMSNorm weights it rescaled, as F32).
Result<std::map<std::string, EncodedTensor>> calibrated_quantize_model(const Model& model, const std::vector<int32_t>& calibration,
                                                                 DType target, const CalibratedOptions& options,
                                                                 const std::function<void(int64_t, int64_t)>& on_layer);

}  // namespace frugal
