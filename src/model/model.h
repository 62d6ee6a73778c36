// A loaded model: its GGUF file (mapped), config, weights as views into the map, tokenizer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/chat_template.h"
#include "io/gguf.h"
#include "io/gguf_names.h"
#include "io/tokenizer.h"
#include "model/model_config.h"
#include "tensor/weight_matrix.h"

namespace frugal {

struct LayerWeights {
  std::vector<float> attn_norm;
  std::vector<float> ffn_norm;
  std::vector<float> q_norm, k_norm;             // per-head, when config.qk_norm
  std::vector<float> post_attn_norm, post_ffn_norm;  // when config.post_norms
  WeightMatrix wq, wk, wv, wo;
  WeightMatrix w_gate, w_up, w_down;

  const WeightMatrix& matrix(names::BlockMatrix m) const {
    switch (m) {
      case names::BlockMatrix::kQ: return wq;
      case names::BlockMatrix::kK: return wk;
      case names::BlockMatrix::kV: return wv;
      case names::BlockMatrix::kAttnOutput: return wo;
      case names::BlockMatrix::kGate: return w_gate;
      case names::BlockMatrix::kUp: return w_up;
      case names::BlockMatrix::kDown: return w_down;
    }
    return wq;
  }
  WeightMatrix& matrix(names::BlockMatrix m) { return const_cast<WeightMatrix&>(static_cast<const LayerWeights*>(this)->matrix(m)); }
};

class Model {
 public:
  static Result<std::shared_ptr<Model>> load(const std::string& path);
  // Loads from an already parsed file (e.g. GgufFile::open_memory), which the model then owns.
  static Result<std::shared_ptr<Model>> load(std::unique_ptr<GgufFile> file);

  const ModelConfig& config() const { return config_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ChatFormat chat_format() const { return chat_template_.fallback; }
  // The model's chat template (tokenizer.chat_template) with its fallback format.
  const ChatTemplate& chat_template() const { return chat_template_; }

  const WeightMatrix& token_embedding() const { return token_embedding_; }
  const WeightMatrix& output() const { return output_; }
  bool tied_output() const { return tied_output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }

  // Elements in all tensors, and bytes of their stored data.
  int64_t parameter_count() const;
  size_t weight_bytes() const;

 private:
  Model() = default;
  Status bind_weights();
  // Marks a block matrix for per-token int8 inputs and binds its LLM.int8() outlier tensors.
  Status bind_w8a8(const std::string& name, WeightMatrix& m);

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ChatTemplate chat_template_;
  WeightMatrix token_embedding_;
  WeightMatrix output_;
  bool tied_output_ = false;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  // Column indices of the LLM.int8() outlier parts (the matrices point into these buffers).
  std::vector<std::vector<int32_t>> outlier_columns_;
};

}  // namespace frugal
