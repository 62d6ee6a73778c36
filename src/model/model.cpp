// Model::load: maps the file, reads the config and tokenizer, and checks every weight's shape
// against the config before anything runs (llama.cpp tensor names: blk.N.attn_q.weight, …).
#include "model/model.h"

#include "io/gguf_vocab.h"

namespace frugal {
namespace {

std::string shape_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// A matrix stored with dims {cols, rows}.
Result<WeightMatrix> bind_matrix(const GgufFile& file, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensorInfo* t = file.find_tensor(name);
  if (t == nullptr) return Status::error("model is missing tensor '" + name + "'");
  if (t->dims.size() != 2 || t->dims[0] != cols || t->dims[1] != rows) {
    return Status::error("tensor '" + name + "' has shape " + shape_string(t->dims) + ", expected " +
                         shape_string({cols, rows}));
  }
  if (cols % 8 != 0) return Status::error("tensor '" + name + "' row length must be a multiple of 8");
  WeightMatrix m;
  m.traits = t->traits;
  m.data = t->data;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = row_bytes(*t->traits, cols);
  return m;
}

// A 1-D weight (norm scale) decoded to floats: it is small and read for every token.
Result<std::vector<float>> read_vector(const GgufFile& file, const std::string& name, int64_t n) {
  const GgufTensorInfo* t = file.find_tensor(name);
  if (t == nullptr) return Status::error("model is missing tensor '" + name + "'");
  if (t->element_count() != n) {
    return Status::error("tensor '" + name + "' has shape " + shape_string(t->dims) + ", expected [" + std::to_string(n) + "]");
  }
  std::vector<float> out(n);
  t->traits->dequantize_row(t->data, out.data(), n);
  return out;
}

}  // namespace

Result<std::shared_ptr<Model>> Model::load(const std::string& path) {
  std::shared_ptr<Model> model(new Model());
  FRUGAL_ASSIGN_OR_RETURN(model->file_, GgufFile::open(path));
  auto prefix = [&](const Status& s) { return Status::error("'" + path + "': " + s.message()); };
  auto config = read_model_config(*model->file_);
  if (!config) return prefix(config.status());
  model->config_ = config.value();
  auto tokenizer = load_tokenizer(*model->file_);
  if (!tokenizer) return prefix(tokenizer.status());
  model->tokenizer_ = std::move(tokenizer.value());
  model->chat_format_ = detect_chat_format(*model->file_);
  if (model->config_.n_vocab == 0) model->config_.n_vocab = model->tokenizer_->vocab_size();
  Status s = model->bind_weights();
  if (!s) return prefix(s);
  return model;
}

Status Model::bind_weights() {
  const ModelConfig& c = config_;
  const GgufFile& f = *file_;
  FRUGAL_ASSIGN_OR_RETURN(token_embedding_, bind_matrix(f, "token_embd.weight", c.n_embd, c.n_vocab));
  if (f.find_tensor("output.weight") != nullptr) {
    FRUGAL_ASSIGN_OR_RETURN(output_, bind_matrix(f, "output.weight", c.n_embd, c.n_vocab));
  } else {
    output_ = token_embedding_;  // tied embeddings
    tied_output_ = true;
  }
  FRUGAL_ASSIGN_OR_RETURN(output_norm_, read_vector(f, "output_norm.weight", c.n_embd));
  layers_.resize(c.n_layer);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LayerWeights& l = layers_[i];
    FRUGAL_ASSIGN_OR_RETURN(l.attn_norm, read_vector(f, p + "attn_norm.weight", c.n_embd));
    FRUGAL_ASSIGN_OR_RETURN(l.ffn_norm, read_vector(f, p + "ffn_norm.weight", c.n_embd));
    if (c.qk_norm) {
      FRUGAL_ASSIGN_OR_RETURN(l.q_norm, read_vector(f, p + "attn_q_norm.weight", c.head_dim));
      FRUGAL_ASSIGN_OR_RETURN(l.k_norm, read_vector(f, p + "attn_k_norm.weight", c.head_dim));
    }
    if (c.post_norms) {
      FRUGAL_ASSIGN_OR_RETURN(l.post_attn_norm, read_vector(f, p + "post_attention_norm.weight", c.n_embd));
      FRUGAL_ASSIGN_OR_RETURN(l.post_ffn_norm, read_vector(f, p + "post_ffw_norm.weight", c.n_embd));
    }
    FRUGAL_ASSIGN_OR_RETURN(l.wq, bind_matrix(f, p + "attn_q.weight", c.n_embd, c.q_dim()));
    FRUGAL_ASSIGN_OR_RETURN(l.wk, bind_matrix(f, p + "attn_k.weight", c.n_embd, c.kv_dim()));
    FRUGAL_ASSIGN_OR_RETURN(l.wv, bind_matrix(f, p + "attn_v.weight", c.n_embd, c.kv_dim()));
    FRUGAL_ASSIGN_OR_RETURN(l.wo, bind_matrix(f, p + "attn_output.weight", c.q_dim(), c.n_embd));
    FRUGAL_ASSIGN_OR_RETURN(l.w_gate, bind_matrix(f, p + "ffn_gate.weight", c.n_embd, c.n_ff));
    FRUGAL_ASSIGN_OR_RETURN(l.w_up, bind_matrix(f, p + "ffn_up.weight", c.n_embd, c.n_ff));
    FRUGAL_ASSIGN_OR_RETURN(l.w_down, bind_matrix(f, p + "ffn_down.weight", c.n_ff, c.n_embd));
  }
  return Status::ok();
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& t : file_->tensors()) n += t.element_count();
  return n;
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& t : file_->tensors()) n += t.bytes;
  return n;
}

}  // namespace frugal
