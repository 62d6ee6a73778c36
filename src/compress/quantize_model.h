// Post-training quantization of a whole GGUF model: reads IN, re-encodes its 2-D weights, writes
// OUT atomically (never a half-written file). Method "rtn" (round-to-nearest) is here; the
// calibrated methods (GPTQ, AWQ, SmoothQuant, LLM.int8()) build on the same plumbing.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/status.h"
#include "tensor/dtype.h"

namespace frugal {

struct QuantizeOptions {
  std::string method = "rtn";
  int bits = 4;
  int64_t group = 32;       // elements per scale; -1 = one scale per output channel
  bool symmetric = false;
  std::string format;       // llama.cpp type name ("q4_k", "q8_0", …); empty = chosen from bits/group
  std::string embedding_format;  // type for token_embd (tied output head); empty = keep as stored
  // Calibrated methods (gptq): calibration text (any file; never the evaluation text) and how
  // many of its tokens to use.
  std::string calibration_path;
  int64_t calibration_tokens = 4096;
  bool act_order = false;
  int n_threads = 2;
};

struct QuantizeReport {
  int64_t tensors_quantized = 0;
  int64_t tensors_kept = 0;
  int64_t fallbacks = 0;  // tensors whose row length did not fit the format's block (see below)
  size_t bytes_in = 0, bytes_out = 0;
  double bits_per_weight = 0;
  double seconds = 0;
};

// The llama.cpp type for a name such as "q4_k" or "Q4_K", or an error listing the valid names.
Result<DType> parse_format(const std::string& name);

// Resolves method/bits/group/format into the storage type, or explains why the combination is
// not supported.
Result<DType> resolve_format(const QuantizeOptions& options);

// `on_tensor(done, total, name)` reports progress.
Result<QuantizeReport> quantize_model(const std::string& input, const std::string& output, const QuantizeOptions& options,
                                      const std::function<void(int64_t, int64_t, const std::string&)>& on_tensor);

}  // namespace frugal
