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
#include "compress/gptq.h"
#include "model/model.h"

namespace frugal {

struct EncodedTensor {
  DType type;
  std::vector<uint8_t> bytes;
};

struct CalibratedOptions {
  int64_t chunk = 512;  // tokens per calibration sequence (attention stays within a sequence)
  int n_threads = 2;
  compress::GptqOptions gptq;
};

// Type each matrix is stored in: `target`, or llama-quantize's 32-element fallback when the row
// length is not a multiple of the target's block (K-quants on 576-wide rows).
DType storage_type_for(DType target, int64_t cols);

// GPTQ-quantizes every attention and FFN matrix of `model` into `target` (per-tensor fallback as
// above) on `calibration` tokens (a multiple of options.chunk is used). `on_layer(done, total)`
// reports progress. Returns the encoded tensors by GGUF name.
Result<std::map<std::string, EncodedTensor>> gptq_quantize_model(const Model& model, const std::vector<int32_t>& calibration,
                                                                 DType target, const CalibratedOptions& options,
                                                                 const std::function<void(int64_t, int64_t)>& on_layer);

}  // namespace frugal
