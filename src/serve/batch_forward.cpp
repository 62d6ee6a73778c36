// BatchForward: embeddings, the model's decoder blocks over a paged multi-sequence batch, and the
// output head on the rows that sample (see batch_forward.h).
#include "serve/batch_forward.h"

#include <cmath>

#include "base/check.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kv/kv_rotation.h"

namespace frugal::serve {

BatchForward::BatchForward(std::shared_ptr<const Model> model, PagedKvCache& cache, int64_t max_tokens,
                           int64_t max_logit_rows, int n_threads, bool kv_rotation)
    : model_(std::move(model)),
      cache_(cache),
      max_tokens_(max_tokens),
      max_logit_rows_(max_logit_rows),
      pool_(n_threads),
      block_(model_->config()),
      workspace_(model_->config(), max_tokens, max_tokens, pool_.size()),
      rotate_keys_(kv_rotation && kv_rotation_applies(cache.options().key_type, model_->config().head_dim)),
      rotate_values_(kv_rotation && kv_rotation_applies(cache.options().value_type, model_->config().head_dim)) {
  const ModelConfig& c = model_->config();
  residual_.resize(static_cast<size_t>(max_tokens * c.n_embd));
  logits_.resize(static_cast<size_t>(max_logit_rows * c.n_vocab));
}

void BatchForward::run(const int32_t* tokens, const int64_t* positions, const int32_t* const* tables, int64_t n,
                       const int64_t* logit_rows, int64_t n_logit_rows) {
  const ModelConfig& c = model_->config();
  FRUGAL_CHECK(n > 0 && n <= max_tokens_ && n_logit_rows <= max_logit_rows_);
  const int64_t embd = c.n_embd;
  embed_tokens(*model_, tokens, n, residual_.data(), pool_);
  PagedBlockView view;
  view.positions = positions;
  view.block_tables = tables;
  view.block_shift = cache_.block_shift();
  view.key_block_bytes = cache_.key_block_bytes();
  view.value_block_bytes = cache_.value_block_bytes();
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    BlockBatch batch;
    batch.n = n;
    batch.keys = cache_.key_base(layer);
    batch.values = cache_.value_base(layer);
    batch.key_type = cache_.options().key_type;
    batch.value_type = cache_.options().value_type;
    batch.paged = &view;
    batch.rotate_keys = rotate_keys_;
    batch.rotate_values = rotate_values_;
    // Without an observer a block cannot fail.
    FRUGAL_CHECK(block_.layer(layer, model_->layers()[layer], residual_.data(), batch, workspace_, pool_).is_ok());
  }
  if (n_logit_rows == 0) return;
  // The output head only on the rows that sample: the final norm of each, then one matmul.
  float* normed = workspace_.normed.data();
  for (int64_t i = 0; i < n_logit_rows; ++i) {
    FRUGAL_CHECK(logit_rows[i] >= 0 && logit_rows[i] < n);
    rms_norm(residual_.data() + logit_rows[i] * embd, model_->output_norm().data(), c.rms_eps, embd, normed + i * embd);
  }
  matmul(model_->output(), normed, embd, n_logit_rows, logits_.data(), c.n_vocab, workspace_.matmul.data(),
         workspace_.matmul.size() * sizeof(float), pool_);
  if (c.final_logit_softcap > 0) {
    const float cap = c.final_logit_softcap;
    for (int64_t i = 0; i < n_logit_rows * c.n_vocab; ++i) logits_[i] = cap * std::tanh(logits_[i] / cap);
  }
}

}  // namespace frugal::serve
