// Model hyper-parameters read from GGUF metadata ("{arch}.*" keys, ggml docs/gguf.md): the
// transformer is described by this data, not by a class per model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/gguf.h"
#include "kernels/ops.h"

namespace frugal {

struct ModelConfig {
  std::string architecture;
  std::string name;
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / linear scaling factor
  int64_t rope_dim = 0;
  RopeStyle rope_style = RopeStyle::kNormal;

  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
};

// Architectures whose graph frugal runs.
const std::vector<std::string>& supported_architectures();

Result<ModelConfig> read_model_config(const GgufFile& file);

}  // namespace frugal
