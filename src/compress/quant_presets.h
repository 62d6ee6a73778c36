// llama-quantize's presets (Q4_K_M, Q3_K_M, Q6_K, Q4_0 …): the per-tensor type mix each one chooses,
// reimplemented from the rules of llama.cpp's src/llama-quant.cpp (llama_tensor_get_type) for the
// presets whose types frugal stores, so `frugal quantize Q4_K_M` writes the layout llama-quantize writes.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "base/status.h"
#include "io/gguf.h"
#include "tensor/dtype.h"

namespace frugal::compress {

struct QuantPreset {
  const char* name;  // as llama-quantize spells it ("Q4_K_M")
  uint32_t file_type;  // llama_ftype, written as general.file_type
  DType base;  // the type of every tensor the mix does not raise
  const char* summary;
};

// The preset called `name` (case-insensitive), or an error listing the presets frugal knows and
// saying why llama.cpp's others (IQ*, TQ*, MXFP4 …: types frugal does not store) are refused.
Result<QuantPreset> find_preset(const std::string& name);
// "Q2_K, Q2_K_S, Q3_K_S, …".
std::string preset_names();
// One line per preset: name, base type, what the mix raises.
std::string preset_table();

// The type llama-quantize gives every tensor of `file` under `preset` (without an imatrix, all
// tensors quantized, no overrides): tensors it keeps (1-D, norms, not ending in "weight") map to
// their stored type. Rows whose length the chosen block does not divide fall back as llama.cpp's
// tensor_type_fallback does (Q4_K -> Q5_0, Q6_K -> Q8_0, …, F16 as the last resort).
Result<std::map<std::string, DType>> preset_tensor_types(const QuantPreset& preset, const GgufFile& file);

}  // namespace frugal::compress
