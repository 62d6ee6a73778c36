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

enum class Activation { kSilu, kGeluTanh };  // gate activation of the gated FFN (SwiGLU / GeGLU)

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

  // Knobs that differ between Llama-family graphs (Gemma 3: Gemma Team 2025, arXiv:2503.19786).
  float embedding_scale = 1.0f;          // token embeddings are multiplied by this (Gemma: sqrt(n_embd))
  float attention_scale = 0.0f;          // query scale; 0 means 1/sqrt(head_dim)
  Activation ffn_activation = Activation::kSilu;
  bool qk_norm = false;                  // per-head RMSNorm of queries and keys before RoPE
  bool post_norms = false;               // RMSNorm of the attention and FFN outputs before the residual add
  int64_t sliding_window = 0;            // keys visible to a windowed layer (0: no windowed layers)
  std::vector<bool> layer_is_windowed;   // per layer: local sliding-window attention
  float rope_base_windowed = 10000.0f;   // RoPE base of windowed layers (their frequency scale is 1)
  float final_logit_softcap = 0.0f;      // logits = c * tanh(logits / c) when > 0

  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
};

// Architectures whose graph frugal runs.
const std::vector<std::string>& supported_architectures();

Result<ModelConfig> read_model_config(const GgufFile& file);

// RoPE inverse frequencies freq_scale * base^(-2i/rope_dim), i < rope_dim/2, for global layers or
// (windowed) for sliding-window layers, which use their own base and no frequency scaling.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config, bool windowed);

}  // namespace frugal
