// Transformer: embeddings, the decoder blocks of model/decoder_block.h over a KV cache, the
// output head (final norm, logits, Gemma's logit soft-capping).
#include "model/transformer.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace frugal {

Transformer::Transformer(std::shared_ptr<const Model> model, const TransformerOptions& options)
    : model_(std::move(model)),
      options_(options),
      pool_(options.n_threads),
      cache_(model_->config().n_layer, options.n_ctx, model_->config().kv_dim()),
      block_(model_->config()),
      workspace_(model_->config(), options.n_batch, options.n_batch, pool_.size()) {
  const ModelConfig& c = model_->config();
  residual_.resize(options_.n_batch * c.n_embd);
  logits_.resize((options_.all_logits ? options_.n_batch : 1) * c.n_vocab);
}

Status Transformer::evaluate(const int32_t* tokens, int64_t n) {
  if (n <= 0) return Status::error("nothing to evaluate: empty token list");
  if (position_ + n > options_.n_ctx) {
    return Status::error("context overflow: " + std::to_string(position_ + n) + " tokens do not fit in a context of " +
                         std::to_string(options_.n_ctx) + " (raise -c)");
  }
  if (options_.all_logits && n > options_.n_batch) {
    return Status::error("at most " + std::to_string(options_.n_batch) + " tokens per call when keeping all logits");
  }
  const int64_t vocab = model_->config().n_vocab;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) return Status::error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
  }
  for (int64_t start = 0; start < n; start += options_.n_batch) {
    const int64_t count = std::min(options_.n_batch, n - start);
    forward_batch(tokens + start, count, options_.all_logits);
  }
  last_count_ = options_.all_logits ? n : 1;
  return Status::ok();
}

const float* Transformer::logits(int64_t i) const {
  FRUGAL_CHECK(i >= 0 && i < last_count_);
  return logits_.data() + i * model_->config().n_vocab;
}

const float* Transformer::hidden_state(int64_t i) const {
  FRUGAL_CHECK(i >= 0 && i < last_batch_);
  return residual_.data() + i * model_->config().n_embd;
}

void Transformer::truncate(int64_t position) {
  FRUGAL_CHECK(position >= 0);
  position_ = std::min(position_, position);
}

void Transformer::forward_batch(const int32_t* tokens, int64_t n, bool keep_all_logits) {
  const ModelConfig& c = model_->config();
  const int64_t embd = c.n_embd;
  embed_tokens(*model_, tokens, n, residual_.data(), pool_);
  const int64_t n_layer = options_.exit_layer > 0 ? std::min(options_.exit_layer, c.n_layer) : c.n_layer;
  for (int64_t layer = 0; layer < n_layer; ++layer) {
    const LayerWeights& w = model_->layers()[layer];
    const BlockBatch batch{n, position_, 0, cache_.key_row(layer, 0), cache_.value_row(layer, 0)};
    // Without an observer a block cannot fail.
    FRUGAL_CHECK(block_.layer(layer, w, residual_.data(), batch, workspace_, pool_).is_ok());
  }
  last_batch_ = n;

  // Only the rows whose logits are wanted go through the output head.
  float* normed = workspace_.normed.data();
  float* ws = workspace_.matmul.data();
  const size_t ws_bytes = workspace_.matmul.size() * sizeof(float);
  const int64_t first = keep_all_logits ? 0 : n - 1;
  const int64_t rows = n - first;
  for (int64_t t = first; t < n; ++t) {
    rms_norm(residual_.data() + t * embd, model_->output_norm().data(), c.rms_eps, embd, normed + (t - first) * embd);
  }
  matmul(model_->output(), normed, embd, rows, logits_.data(), c.n_vocab, ws, ws_bytes, pool_);
  if (c.final_logit_softcap > 0) {
    const float cap = c.final_logit_softcap;
    for (int64_t i = 0; i < rows * c.n_vocab; ++i) logits_[i] = cap * std::tanh(logits_[i] / cap);
  }
  position_ += n;
}

}  // namespace frugal
