// read_model_config: "{arch}.*" hyper-parameters with the defaults llama.cpp assumes when absent.
#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "io/gguf_names.h"

namespace frugal {

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> names = {"llama", "gemma3"};
  return names;
}

std::vector<float> rope_inverse_frequencies(const ModelConfig& c, bool windowed) {
  const double base = windowed ? c.rope_base_windowed : c.rope_base;
  const double scale = windowed ? 1.0 : c.rope_freq_scale;
  std::vector<float> out(c.rope_dim / 2);
  for (int64_t i = 0; i < c.rope_dim / 2; ++i) {
    out[i] = static_cast<float>(scale * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(c.rope_dim)));
  }
  return out;
}

Result<ModelConfig> read_model_config(const GgufFile& file) {
  ModelConfig c;
  FRUGAL_ASSIGN_OR_RETURN(c.architecture, file.get_string(names::kArchitectureKey));
  const auto& supported = supported_architectures();
  if (std::find(supported.begin(), supported.end(), c.architecture) == supported.end()) {
    std::string list;
    for (const auto& s : supported) list += (list.empty() ? "" : ", ") + s;
    return Status::error("unsupported architecture '" + c.architecture + "' (frugal runs: " + list + ")");
  }
  const std::string a = c.architecture + ".";
  c.name = file.get_string_or("general.name", "");
  FRUGAL_ASSIGN_OR_RETURN(c.n_embd, file.get_int(a + "embedding_length"));
  FRUGAL_ASSIGN_OR_RETURN(c.n_layer, file.get_int(a + "block_count"));
  FRUGAL_ASSIGN_OR_RETURN(c.n_head, file.get_int(a + "attention.head_count"));
  FRUGAL_ASSIGN_OR_RETURN(c.n_ff, file.get_int(a + "feed_forward_length"));
  c.n_head_kv = file.get_int_or(a + "attention.head_count_kv", c.n_head);
  c.n_ctx_train = file.get_int_or(a + "context_length", 2048);
  // Upper bounds far above any real model keep every product of these (q_dim, kv_dim, matrix
  // sizes) well inside int64, whatever the file says.
  if (c.n_embd <= 0 || c.n_layer <= 0 || c.n_head <= 0 || c.n_head_kv <= 0 || c.n_ff <= 0 ||
      c.n_head % c.n_head_kv != 0 || c.n_layer > 4096 || c.n_embd > (1 << 20) || c.n_head > 4096 ||
      c.n_ff > (1 << 22)) {
    return Status::error("invalid hyper-parameters: embedding " + std::to_string(c.n_embd) + ", layers " +
                         std::to_string(c.n_layer) + ", heads " + std::to_string(c.n_head) + "/" +
                         std::to_string(c.n_head_kv));
  }
  c.head_dim = file.get_int_or(a + "attention.key_length", c.n_embd / c.n_head);
  if (file.get_int_or(a + "attention.value_length", c.head_dim) != c.head_dim || c.head_dim <= 0 || c.head_dim % 8 != 0 ||
      c.head_dim > 4096) {
    return Status::error("unsupported head size " + std::to_string(c.head_dim) +
                         " (keys and values must match, multiple of 8, at most 4096)");
  }
  c.rms_eps = static_cast<float>(file.get_float_or(a + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_base = static_cast<float>(file.get_float_or(a + "rope.freq_base", 10000.0));
  c.rope_dim = file.get_int_or(a + "rope.dimension_count", c.head_dim);
  if (c.rope_dim <= 0 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) {
    return Status::error("invalid rope.dimension_count " + std::to_string(c.rope_dim));
  }
  const std::string scaling = file.get_string_or(a + "rope.scaling.type", "none");
  if (scaling == "linear") {
    double factor = file.get_float_or(a + "rope.scaling.factor", 1.0);
    if (factor <= 0) return Status::error("invalid rope.scaling.factor");
    c.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling != "none" && !scaling.empty()) {
    return Status::error("unsupported rope scaling '" + scaling + "'");
  }
  // Llama-family GGUF files store Q/K permuted for the adjacent-pair rotation (ggml "norm" mode);
  // Gemma keeps the original half-split rotation (ggml "neox" mode).
  c.rope_style = RopeStyle::kNormal;
  c.layer_is_windowed.assign(c.n_layer, false);
  if (c.architecture == "gemma3") {
    c.rope_style = RopeStyle::kNeox;
    c.embedding_scale = std::sqrt(static_cast<float>(c.n_embd));
    c.ffn_activation = Activation::kGeluTanh;
    c.qk_norm = true;
    c.post_norms = true;
    // Queries are scaled by 1/sqrt(query_pre_attn_scalar), which is the head size for every
    // Gemma 3 size but the 27B (62 layers), where it is n_embd / n_head.
    c.attention_scale = 1.0f / std::sqrt(static_cast<float>(c.n_layer == 62 ? c.n_embd / c.n_head : c.head_dim));
    c.sliding_window = file.get_int_or(a + "attention.sliding_window", 0);
    if (c.sliding_window < 0) return Status::error("invalid attention.sliding_window");
    c.rope_base_windowed = static_cast<float>(file.get_float_or(a + "rope.freq_base_swa", 10000.0));
    // Five local (sliding-window) layers, then one global layer, repeating.
    const int64_t pattern = file.get_int_or(a + "attention.sliding_window_pattern", 6);
    for (int64_t i = 0; i < c.n_layer && c.sliding_window > 0; ++i) {
      c.layer_is_windowed[i] = pattern <= 0 || i % pattern < pattern - 1;
    }
    c.final_logit_softcap = static_cast<float>(file.get_float_or(a + "final_logit_softcapping", 0.0));
  }
  if (const GgufValue* tokens = file.find("tokenizer.ggml.tokens")) c.n_vocab = static_cast<int64_t>(tokens->array_size);
  c.n_vocab = file.get_int_or(a + "vocab_size", c.n_vocab);
  if (c.n_vocab < 0 || c.n_vocab > INT32_MAX) return Status::error("invalid vocabulary size " + std::to_string(c.n_vocab));
  return c;
}

}  // namespace frugal
