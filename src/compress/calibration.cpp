// CalibrationPass: all calibration tokens are one batch of independent sequences, so each matmul
// input a BlockObserver sees holds every calibration token.
#include "compress/calibration.h"

#include <string>

#include "base/check.h"
#include "io/text_file.h"

namespace frugal::compress {

Result<std::vector<int32_t>> read_calibration_tokens(const Model& model, const std::string& path, int64_t max_tokens) {
  if (path.empty()) return Status::error("no calibration text given (--calib FILE)");
  FRUGAL_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  if (text.empty()) return Status::error("calibration file '" + path + "' is empty");
  std::vector<int32_t> tokens = model.tokenizer().encode(text, true, false);
  if (max_tokens >= 0 && static_cast<int64_t>(tokens.size()) > max_tokens) tokens.resize(static_cast<size_t>(max_tokens));
  return tokens;
}

CalibrationPass::CalibrationPass(const Model& model, int64_t n, int64_t sequence_length, int n_threads)
    : model_(model),
      n_(n),
      sequence_length_(sequence_length),
      pool_(n_threads),
      block_(model.config()),
      workspace_(model.config(), n, sequence_length, pool_.size()) {
  const ModelConfig& c = model.config();
  hidden_.resize(static_cast<size_t>(n * c.n_embd));
  keys_.resize(static_cast<size_t>(n * c.kv_dim()));
  values_.resize(static_cast<size_t>(n * c.kv_dim()));
}

Result<std::unique_ptr<CalibrationPass>> CalibrationPass::make(const Model& model, const std::vector<int32_t>& tokens,
                                                               int64_t sequence_length, int n_threads) {
  if (sequence_length <= 0) return Status::error("calibration sequence length must be positive");
  const int64_t n_seq = static_cast<int64_t>(tokens.size()) / sequence_length;
  if (n_seq < 1) {
    return Status::error("calibration text has " + std::to_string(tokens.size()) + " tokens; at least " +
                         std::to_string(sequence_length) + " are needed");
  }
  const int64_t vocab = model.config().n_vocab;
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab) return Status::error("calibration token id " + std::to_string(t) + " is outside the vocabulary");
  }
  const int64_t n = n_seq * sequence_length;
  std::unique_ptr<CalibrationPass> pass(new CalibrationPass(model, n, sequence_length, n_threads));
  embed_tokens(model, tokens.data(), n, pass->hidden_.data(), pass->pool_);
  return pass;
}

Status CalibrationPass::attention(int64_t layer, BlockObserver* observer) {
  const BlockBatch batch{n_, 0, sequence_length_, keys_.data(), values_.data()};
  return block_.attention(layer, model_.layers()[layer], hidden_.data(), batch, workspace_, pool_, observer);
}

Status CalibrationPass::ffn(int64_t layer, BlockObserver* observer) {
  return block_.ffn(layer, model_.layers()[layer], hidden_.data(), n_, workspace_, pool_, observer);
}

Status CalibrationPass::layer(int64_t layer, BlockObserver* observer) {
  const BlockBatch batch{n_, 0, sequence_length_, keys_.data(), values_.data()};
  return block_.layer(layer, model_.layers()[layer], hidden_.data(), batch, workspace_, pool_, observer);
}

FloatMatrix FloatMatrix::dequantize(const WeightMatrix& w) {
  FloatMatrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  m.values.resize(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) w.traits->dequantize_row(w.row(r), m.values.data() + r * w.cols, w.cols);
  return m;
}

WeightMatrix FloatMatrix::view() const {
  WeightMatrix m;
  m.traits = &type_traits(DType::F32);
  m.data = reinterpret_cast<const uint8_t*>(values.data());
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = static_cast<size_t>(cols) * sizeof(float);
  return m;
}

void WorkingLayer::load(const Model& model, int64_t layer) {
  layer_ = layer;
  for (names::BlockMatrix m : names::kBlockMatrices) {
    matrices_[static_cast<size_t>(m)] = FloatMatrix::dequantize(model.layers()[layer].matrix(m));
    names_[static_cast<size_t>(m)] = names::block_matrix(layer, m);
  }
}

Status WorkingLayer::on_input(int64_t layer, BlockInput input, float* x, int64_t n, int64_t cols) {
  FRUGAL_CHECK(layer == layer_);
  return hook_ ? hook_(input, x, n, cols) : Status::ok();
}

const WeightMatrix& WorkingLayer::weights(int64_t layer, names::BlockMatrix matrix, const WeightMatrix& stored) {
  FRUGAL_CHECK(layer == layer_);
  (void)stored;
  // A fresh view each time: the compressor may have replaced the values' storage.
  const size_t i = static_cast<size_t>(matrix);
  views_[i] = matrices_[i].view();
  return views_[i];
}

}  // namespace frugal::compress
