// Transformer: embeddings, the decoder blocks of model/decoder_block.h over a KV cache, the
// output head (final norm, logits, Gemma's logit soft-capping).
#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kv/kv_rotation.h"

namespace frugal {

Transformer::Transformer(std::shared_ptr<const Model> model, const TransformerOptions& options)
    : model_(std::move(model)),
      options_(options),
      own_pool_(options.shared_pool ? nullptr : std::make_unique<ThreadPool>(options.n_threads)),
      pool_(options.shared_pool ? *options.shared_pool : *own_pool_),
      cache_(model_->config().n_layer, options.window > 0 ? options.window : options.n_ctx, model_->config().kv_dim(),
             options.cache_type_k, options.cache_type_v),
      block_(model_->config()),
      workspace_(model_->config(), options.n_batch, options.n_batch, pool_.size()),
      rotate_keys_(options.kv_rotation && kv_rotation_applies(options.cache_type_k, model_->config().head_dim)),
      rotate_values_(options.kv_rotation && kv_rotation_applies(options.cache_type_v, model_->config().head_dim)) {
  const ModelConfig& c = model_->config();
  residual_.resize(options_.n_batch * c.n_embd);
  shift_row_.resize(c.kv_dim());
  logits_.resize((options_.all_logits ? options_.n_batch : std::clamp<int64_t>(options_.kept_logit_rows, 1, options_.n_batch)) *
                 c.n_vocab);
}

Status check_transformer_options(const ModelConfig& config, const TransformerOptions& options) {
  FRUGAL_RETURN_IF_ERROR(check_kv_type(options.cache_type_k, config.head_dim));
  FRUGAL_RETURN_IF_ERROR(check_kv_type(options.cache_type_v, config.head_dim));
  if (options.window < 0 || options.sinks < 0) return Status::error("--window and --sinks must not be negative");
  if (options.window > 0 && options.window <= options.sinks) {
    return Status::error("--window " + std::to_string(options.window) + " must be larger than --sinks " + std::to_string(options.sinks));
  }
  return Status::ok();
}

Status Transformer::evaluate(const int32_t* tokens, int64_t n) { return evaluate(tokens, n, options_.all_logits); }

Status Transformer::evaluate_keeping_logits(const int32_t* tokens, int64_t n) {
  const int64_t rows = options_.all_logits ? options_.n_batch : std::min(options_.n_batch, options_.kept_logit_rows);
  if (n > rows) return Status::error("at most " + std::to_string(rows) + " tokens per call when keeping their logits");
  return evaluate(tokens, n, true);
}

Status Transformer::evaluate(const int32_t* tokens, int64_t n, bool keep_all_logits) {
  if (n <= 0) return Status::error("nothing to evaluate: empty token list");
  if (options_.window > 0) {
    // A batch must fit next to the sinks; evaluate() splits it into n_batch steps, each evicting.
    const int64_t room = options_.window - options_.sinks;
    if (std::min(n, options_.n_batch) > room) {
      return Status::error("a batch of " + std::to_string(std::min(n, options_.n_batch)) + " tokens does not fit in --window " +
                           std::to_string(options_.window) + " next to " + std::to_string(options_.sinks) + " sinks");
    }
  } else if (position_ + n > options_.n_ctx) {
    return Status::error("context overflow: " + std::to_string(position_ + n) + " tokens do not fit in a context of " +
                         std::to_string(options_.n_ctx) + " (raise -c)");
  }
  if (keep_all_logits && n > options_.n_batch) {
    return Status::error("at most " + std::to_string(options_.n_batch) + " tokens per call when keeping all logits");
  }
  const int64_t vocab = model_->config().n_vocab;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) return Status::error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
  }
  for (int64_t start = 0; start < n; start += options_.n_batch) {
    const int64_t count = std::min(options_.n_batch, n - start);
    if (options_.window > 0) evict_for(count);
    forward_batch(tokens + start, count, keep_all_logits);
  }
  last_count_ = keep_all_logits ? n : 1;
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

// StreamingLLM's rolling cache (Xiao et al. 2023, "Efficient Streaming Language Models with
// Attention Sinks"): the first `sinks` positions stay, the oldest others go, and the kept tokens
// take consecutive positions after the sinks. Keys carry RoPE, and a rotation by angle p·f followed
// by one by -d·f is the rotation at p - d (Su et al. 2021), so each moved key is rotated by -drop
// instead of being recomputed. Tokens are dropped in steps of an eighth of the window rather than
// one at a time, so the move and re-rotation (O(window) per step) cost O(1) per token amortized.
void Transformer::evict_for(int64_t n) {
  const int64_t cap = cache_.capacity(), sinks = options_.sinks;
  if (position_ + n <= cap) return;
  const int64_t need = position_ + n - cap;
  const int64_t drop = std::min(std::max(need, (cap - sinks) / 8), position_ - sinks);
  const ModelConfig& c = model_->config();
  const int64_t kvd = c.kv_dim(), moved = position_ - sinks - drop;
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    const float* inv_freq = block_.inv_freq(layer);
    // In order: rows move towards the front, so each source row is read before it is overwritten
    // (a parallel split would let one thread overwrite rows another has yet to read).
    for (int64_t i = 0; i < moved; ++i) {
      KvCache::load(cache_.key_row(layer, sinks + drop + i), kvd, cache_.key_type(), shift_row_.data());
      // A rotated key is un-rotated for RoPE (which acts on the original channel pairs), then
      // rotated again (H is its own inverse).
      if (rotate_keys_) hadamard_transform_heads(shift_row_.data(), c.n_head_kv, c.head_dim);
      rope(shift_row_.data(), c.n_head_kv, c.head_dim, c.rope_dim, -drop, inv_freq, c.rope_style);
      if (rotate_keys_) hadamard_transform_heads(shift_row_.data(), c.n_head_kv, c.head_dim);
      KvCache::store(shift_row_.data(), kvd, cache_.key_type(), cache_.key_row(layer, sinks + i));
    }
    std::memmove(cache_.value_row(layer, sinks), cache_.value_row(layer, sinks + drop),
                 static_cast<size_t>(moved * cache_.value_row_bytes()));
  }
  position_ -= drop;
  evicted_ += drop;
}

void Transformer::forward_batch(const int32_t* tokens, int64_t n, bool keep_all_logits) {
  const ModelConfig& c = model_->config();
  const int64_t embd = c.n_embd;
  embed_tokens(*model_, tokens, n, residual_.data(), pool_);
  const int64_t n_layer = options_.exit_layer > 0 ? std::min(options_.exit_layer, c.n_layer) : c.n_layer;
  for (int64_t layer = 0; layer < n_layer; ++layer) {
    const LayerWeights& w = model_->layers()[layer];
    BlockBatch batch{n,         position_, 0, cache_.key_row(layer, 0), cache_.value_row(layer, 0), cache_.key_type(),
                     cache_.value_type()};
    batch.rotate_keys = rotate_keys_;
    batch.rotate_values = rotate_values_;
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
