// Model::load: maps the file, reads the config and tokenizer, and checks every weight's shape
// against the config before anything runs (llama.cpp tensor names: blk.N.attn_q.weight, …).
#include "model/model.h"

#include "io/gguf_names.h"
#include "io/gguf_vocab.h"
#include "kernels/activation_quant.h"

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

Status Model::bind_w8a8(const std::string& name, WeightMatrix& m) {
  m.per_token_input = true;
  if (kernels::activation_format_for(m.traits->type) != kernels::ActivationFormat::kQ8Block32) {
    return Status::error("tensor '" + name + "' is " + m.traits->name +
                         ", but per-token activation quantization needs a 32-element block type (q8_0, q4_0, …)");
  }
  // LLM.int8() outlier part: NAME.outlier_columns (F32 column indices) and NAME.outlier_weight
  // (F16, rows x n) next to NAME.weight.
  const std::string stem = names::weight_stem(name);
  const GgufTensorInfo* columns = file_->find_tensor(stem + names::kOutlierColumnsSuffix);
  const GgufTensorInfo* weights = file_->find_tensor(stem + names::kOutlierWeightSuffix);
  if (columns == nullptr && weights == nullptr) return Status::ok();
  if (columns == nullptr || weights == nullptr) {
    return Status::error("tensor '" + name + "' has only one of .outlier_columns and .outlier_weight");
  }
  const int64_t n = columns->element_count();
  if (columns->traits->type != DType::F32 || columns->dims.size() != 1 || weights->traits->type != DType::F16 ||
      weights->dims.size() != 2 || weights->dims[0] != n || weights->dims[1] != m.rows) {
    return Status::error("outlier tensors of '" + name + "' must be F32 [n] and F16 [n, " + std::to_string(m.rows) + "]");
  }
  std::vector<float> values(n);
  columns->traits->dequantize_row(columns->data, values.data(), n);
  std::vector<int32_t> indices(n);
  for (int64_t j = 0; j < n; ++j) {
    const float v = values[j];
    if (!(v >= 0.0f && v < static_cast<float>(m.cols)) || v != static_cast<float>(static_cast<int32_t>(v)) ||
        (j > 0 && static_cast<int32_t>(v) <= indices[j - 1])) {
      return Status::error("'" + stem + ".outlier_columns' must hold increasing column indices below " + std::to_string(m.cols));
    }
    indices[j] = static_cast<int32_t>(v);
  }
  outlier_columns_.push_back(std::move(indices));
  m.outlier_columns = outlier_columns_.back().data();
  m.outlier_weights = reinterpret_cast<const uint16_t*>(weights->data);
  m.n_outliers = n;
  return Status::ok();
}

Result<std::shared_ptr<Model>> Model::load(const std::string& path) {
  FRUGAL_ASSIGN_OR_RETURN(auto file, GgufFile::open(path));
  return load(std::move(file));
}

Result<std::shared_ptr<Model>> Model::load(std::unique_ptr<GgufFile> file) {
  std::shared_ptr<Model> model(new Model());
  model->file_ = std::move(file);
  const std::string path = model->file_->path();
  auto prefix = [&](const Status& s) { return Status::error("'" + path + "': " + s.message()); };
  auto config = read_model_config(*model->file_);
  if (!config) return prefix(config.status());
  model->config_ = config.value();
  auto tokenizer = load_tokenizer(*model->file_);
  if (!tokenizer) return prefix(tokenizer.status());
  model->tokenizer_ = std::move(tokenizer.value());
  model->chat_template_ = read_chat_template(*model->file_, *model->tokenizer_);
  if (model->config_.n_vocab == 0) model->config_.n_vocab = model->tokenizer_->vocab_size();
  // Every id the tokenizer can produce indexes the embedding and the output head, so their rows
  // (n_vocab, checked against both tensors below) must cover the whole vocabulary.
  if (model->config_.n_vocab < model->tokenizer_->vocab_size()) {
    return prefix(Status::error("token_embd.weight and output.weight have " + std::to_string(model->config_.n_vocab) +
                                " rows (" + model->config_.architecture + ".vocab_size) but the tokenizer has " +
                                std::to_string(model->tokenizer_->vocab_size()) + " tokens"));
  }
  Status s = model->bind_weights();
  if (!s) return prefix(s);
  return model;
}

Status Model::bind_weights() {
  const ModelConfig& c = config_;
  const GgufFile& f = *file_;
  FRUGAL_ASSIGN_OR_RETURN(token_embedding_, bind_matrix(f, names::kTokenEmbedding, c.n_embd, c.n_vocab));
  if (f.find_tensor(names::kOutput) != nullptr) {
    FRUGAL_ASSIGN_OR_RETURN(output_, bind_matrix(f, names::kOutput, c.n_embd, c.n_vocab));
  } else {
    output_ = token_embedding_;  // tied embeddings
    tied_output_ = true;
  }
  FRUGAL_ASSIGN_OR_RETURN(output_norm_, read_vector(f, names::kOutputNorm, c.n_embd));
  layers_.resize(c.n_layer);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    using names::BlockTensor;
    auto p = [i](BlockTensor t) { return names::block_tensor(i, t); };
    LayerWeights& l = layers_[i];
    FRUGAL_ASSIGN_OR_RETURN(l.attn_norm, read_vector(f, p(BlockTensor::kAttnNorm), c.n_embd));
    FRUGAL_ASSIGN_OR_RETURN(l.ffn_norm, read_vector(f, p(BlockTensor::kFfnNorm), c.n_embd));
    if (c.qk_norm) {
      FRUGAL_ASSIGN_OR_RETURN(l.q_norm, read_vector(f, p(BlockTensor::kQNorm), c.head_dim));
      FRUGAL_ASSIGN_OR_RETURN(l.k_norm, read_vector(f, p(BlockTensor::kKNorm), c.head_dim));
    }
    if (c.post_norms) {
      FRUGAL_ASSIGN_OR_RETURN(l.post_attn_norm, read_vector(f, p(BlockTensor::kPostAttnNorm), c.n_embd));
      FRUGAL_ASSIGN_OR_RETURN(l.post_ffn_norm, read_vector(f, p(BlockTensor::kPostFfnNorm), c.n_embd));
    }
    FRUGAL_ASSIGN_OR_RETURN(l.wq, bind_matrix(f, p(BlockTensor::kQ), c.n_embd, c.q_dim()));
    FRUGAL_ASSIGN_OR_RETURN(l.wk, bind_matrix(f, p(BlockTensor::kK), c.n_embd, c.kv_dim()));
    FRUGAL_ASSIGN_OR_RETURN(l.wv, bind_matrix(f, p(BlockTensor::kV), c.n_embd, c.kv_dim()));
    FRUGAL_ASSIGN_OR_RETURN(l.wo, bind_matrix(f, p(BlockTensor::kAttnOutput), c.q_dim(), c.n_embd));
    FRUGAL_ASSIGN_OR_RETURN(l.w_gate, bind_matrix(f, p(BlockTensor::kGate), c.n_embd, c.n_ff));
    FRUGAL_ASSIGN_OR_RETURN(l.w_up, bind_matrix(f, p(BlockTensor::kUp), c.n_embd, c.n_ff));
    FRUGAL_ASSIGN_OR_RETURN(l.w_down, bind_matrix(f, p(BlockTensor::kDown), c.n_ff, c.n_embd));
  }
  const std::string activation_quant = f.get_string_or(names::kActivationQuantKey, "per_block");
  if (activation_quant == "per_token") {
    for (int64_t i = 0; i < c.n_layer; ++i) {
      for (names::BlockMatrix m : names::kBlockMatrices) {
        FRUGAL_RETURN_IF_ERROR(bind_w8a8(names::block_matrix(i, m), layers_[i].matrix(m)));
      }
    }
  } else if (activation_quant != "per_block") {
    return Status::error(std::string(names::kActivationQuantKey) + " is '" + activation_quant + "'; expected per_block or per_token");
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
