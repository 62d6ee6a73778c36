// Post-training quantization of a whole GGUF model: reads IN, re-encodes its 2-D weights, writes
// OUT atomically (never a half-written file). Methods: rtn (round-to-nearest), gptq and awq
// (calibrated, compress/calibrated_quantize.h), smoothquant, w8a8 and llm-int8 (int8 weights with
// per-token int8 activations, compress/w8a8.h).
//
// Storage: llama.cpp layouts wherever the grid fits one (q8_0, q4_0 … q6_K), so llama.cpp loads
// the file; otherwise frugal's generic group types (tensor/generic_group.h, e.g. fq3_g128), run
// by frugal only. LLM.int8() files add NAME.outlier_columns/NAME.outlier_weight tensors and are
// frugal-only; SmoothQuant and W8A8 files are plain q8_0 (llama.cpp runs them with its own
// per-block activation quantization).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "base/status.h"
#include "compress/format_grid.h"
#include "io/gguf.h"
#include "tensor/dtype.h"

namespace frugal {

struct QuantizeOptions {
  std::string method = "rtn";  // rtn, gptq, awq, smoothquant, w8a8, llm-int8
  int bits = 4;
  int64_t group = 32;       // elements per scale; -1 = one scale per output channel
  bool symmetric = false;
  // A group that does not divide a tensor's row length is an error, unless this is set: then such
  // rows use the largest of 256/128/64/32 that is at most `group` and divides them (as
  // llama-quantize falls back from K-quants on rows that are not multiples of 256).
  bool group_fallback = false;
  std::string format;       // llama.cpp type name ("q4_k", "q8_0", …); empty = chosen from bits/group
  // Take each tensor's type from this GGUF file (e.g. llama-quantize's Q3_K_M output), so the
  // result has exactly that mixed layout and size.
  std::string types_from;
  // The same from a computed mix (compress/quant_presets.h, a llama-quantize preset): every
  // tensor's type, a label for the report and the general.file_type to write.
  std::map<std::string, DType> tensor_types;
  std::string tensor_types_label;
  std::optional<uint32_t> file_type;
  float smooth_alpha = 0.5f;       // smoothquant: migration strength alpha
  float outlier_threshold = 6.0f;  // llm-int8: input magnitude that makes a column an outlier
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

// What the options quantize each weight matrix to.
class QuantizePlan {
 public:
  // Checks the method/bits/group/format combination and explains what is not supported.
  static Result<QuantizePlan> make(const QuantizeOptions& options);

  // The target of tensor `name` with rows of `cols` (format fallbacks applied), or an error (a
  // group that does not divide the rows, a tensor missing from --types-from).
  Result<compress::QuantTarget> target_for(const std::string& name, int64_t cols) const;
  // "q4_K", "fq3_g128", "int8 per-channel (q8_0) + per-token int8 activations", "types of FILE".
  const std::string& description() const { return description_; }
  // Uniform llama.cpp type (for general.file_type), if any.
  std::optional<DType> uniform_format() const { return format_; }
  bool int8_method() const { return int8_method_; }
  // rtn --bits 8 --group -1 --symmetric: int8 rows with one scale, in q8_0 blocks (llama.cpp
  // loads them; frugal's int8 kernels run them).
  bool per_channel_int8() const { return per_channel_int8_; }
  // general.file_type of the --types-from file, if it has one.
  const std::optional<GgufValue>& reference_file_type() const { return reference_file_type_; }
  // Group of the generic grid (before fallbacks).
  int64_t generic_group() const { return generic_.group_size; }

 private:
  QuantizeOptions options_;
  std::string description_;
  std::optional<DType> format_;
  bool int8_method_ = false;
  bool per_channel_int8_ = false;
  compress::GenericGridSpec generic_;
  std::map<std::string, DType> reference_types_;  // --types-from
  std::optional<GgufValue> reference_file_type_;
};

// `on_tensor(done, total, name)` reports progress.
Result<QuantizeReport> quantize_model(const std::string& input, const std::string& output, const QuantizeOptions& options,
                                      const std::function<void(int64_t, int64_t, const std::string&)>& on_tensor);

}  // namespace frugal
