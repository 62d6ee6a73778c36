// Transformer::forward_batch — pre-norm decoder blocks (Touvron et al. 2023, "LLaMA"):
//   h = x + Wo·Attn(RoPE(Wq·n1(x)), RoPE(Wk·n1(x)), Wv·n1(x));  y = h + Wd·(silu(Wg·n2(h)) ⊙ Wu·n2(h))
// with the Gemma 3 variations switched on by the config: scaled embeddings, per-head q/k norms,
// post-attention/post-FFN norms, GELU gating, and local sliding-window layers with their own
// RoPE base (Gemma Team 2025, arXiv:2503.19786).
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
      cache_(model_->config().n_layer, options.n_ctx, model_->config().kv_dim()) {
  const ModelConfig& c = model_->config();
  const int64_t b = options_.n_batch;
  inv_freq_ = rope_inverse_frequencies(c, false);
  inv_freq_windowed_ = rope_inverse_frequencies(c, true);
  residual_.resize(b * c.n_embd);
  normed_.resize(b * std::max(c.n_embd, c.q_dim()));
  q_.resize(b * c.q_dim());
  k_.resize(b * c.kv_dim());
  v_.resize(b * c.kv_dim());
  attn_.resize(b * c.q_dim());
  gate_.resize(b * c.n_ff);
  up_.resize(b * c.n_ff);
  logits_.resize((options_.all_logits ? b : 1) * c.n_vocab);
  const int64_t widest = std::max({c.n_embd, c.q_dim(), c.n_ff});
  matmul_workspace_.resize((matmul_workspace_bytes(widest, b, pool_.size()) + sizeof(float) - 1) / sizeof(float));
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

void Transformer::truncate(int64_t position) {
  FRUGAL_CHECK(position >= 0);
  position_ = std::min(position_, position);
}

void Transformer::forward_batch(const int32_t* tokens, int64_t n, bool keep_all_logits) {
  const ModelConfig& c = model_->config();
  const int64_t embd = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim(), ff = c.n_ff, hd = c.head_dim;
  const int64_t pos0 = position_;
  float* ws = matmul_workspace_.data();
  const size_t ws_bytes = matmul_workspace_.size() * sizeof(float);
  const WeightMatrix& embedding = model_->token_embedding();

  pool_.parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* x = residual_.data() + t * embd;
      embedding.traits->dequantize_row(embedding.row(tokens[t]), x, embd);
      if (c.embedding_scale != 1.0f) {
        for (int64_t i = 0; i < embd; ++i) x[i] *= c.embedding_scale;
      }
    }
  });

  const float attention_scale = c.attention_scale > 0 ? c.attention_scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t group = c.n_head / c.n_head_kv;
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    const LayerWeights& w = model_->layers()[layer];
    const bool windowed = c.layer_is_windowed[layer];
    const float* inv_freq = windowed ? inv_freq_windowed_.data() : inv_freq_.data();
    pool_.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) rms_norm(residual_.data() + t * embd, w.attn_norm.data(), c.rms_eps, embd, normed_.data() + t * embd);
    });
    const MatmulTarget qkv[] = {{&w.wq, q_.data(), qd}, {&w.wk, k_.data(), kvd}, {&w.wv, v_.data(), kvd}};
    matmul_shared_input(qkv, normed_.data(), embd, n, ws, ws_bytes, pool_);
    pool_.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (c.qk_norm) {
          for (int64_t h = 0; h < c.n_head; ++h) rms_norm(q_.data() + t * qd + h * hd, w.q_norm.data(), c.rms_eps, hd, q_.data() + t * qd + h * hd);
          for (int64_t h = 0; h < c.n_head_kv; ++h) rms_norm(k_.data() + t * kvd + h * hd, w.k_norm.data(), c.rms_eps, hd, k_.data() + t * kvd + h * hd);
        }
        rope(q_.data() + t * qd, c.n_head, hd, c.rope_dim, pos0 + t, inv_freq, c.rope_style);
        rope(k_.data() + t * kvd, c.n_head_kv, hd, c.rope_dim, pos0 + t, inv_freq, c.rope_style);
        KvCache::store(k_.data() + t * kvd, kvd, cache_.key_row(layer, pos0 + t));
        KvCache::store(v_.data() + t * kvd, kvd, cache_.value_row(layer, pos0 + t));
      }
    });
    // Causal attention: token t sees cache positions [0, pos0 + t] (a windowed layer only the last
    // sliding_window of them); one task per (token, head).
    pool_.parallel_for(n * c.n_head, 4, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / c.n_head, h = task % c.n_head, kv_head = h / group;
        const int64_t first = windowed ? std::max<int64_t>(0, pos0 + t - c.sliding_window + 1) : 0;
        attend_one_head(q_.data() + t * qd + h * hd, cache_.key_row(layer, 0) + kv_head * hd,
                        cache_.value_row(layer, 0) + kv_head * hd, kvd, first, pos0 + t, hd, attention_scale,
                        attn_.data() + t * qd + h * hd);
      }
    });
    matmul(w.wo, attn_.data(), qd, n, normed_.data(), embd, ws, ws_bytes, pool_);
    pool_.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* x = residual_.data() + t * embd;
        float* o = normed_.data() + t * embd;
        if (c.post_norms) rms_norm(o, w.post_attn_norm.data(), c.rms_eps, embd, o);
        for (int64_t i = 0; i < embd; ++i) x[i] += o[i];
        rms_norm(x, w.ffn_norm.data(), c.rms_eps, embd, o);
      }
    });
    const MatmulTarget gate_up[] = {{&w.w_gate, gate_.data(), ff}, {&w.w_up, up_.data(), ff}};
    matmul_shared_input(gate_up, normed_.data(), embd, n, ws, ws_bytes, pool_);
    pool_.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (c.ffn_activation == Activation::kGeluTanh) {
          geglu(gate_.data() + t * ff, up_.data() + t * ff, ff);
        } else {
          swiglu(gate_.data() + t * ff, up_.data() + t * ff, ff);
        }
      }
    });
    matmul(w.w_down, gate_.data(), ff, n, normed_.data(), embd, ws, ws_bytes, pool_);
    pool_.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* x = residual_.data() + t * embd;
        float* o = normed_.data() + t * embd;
        if (c.post_norms) rms_norm(o, w.post_ffn_norm.data(), c.rms_eps, embd, o);
        for (int64_t i = 0; i < embd; ++i) x[i] += o[i];
      }
    });
  }

  // Only the rows whose logits are wanted go through the output head.
  const int64_t first = keep_all_logits ? 0 : n - 1;
  const int64_t rows = n - first;
  for (int64_t t = first; t < n; ++t) {
    rms_norm(residual_.data() + t * embd, model_->output_norm().data(), c.rms_eps, embd, normed_.data() + (t - first) * embd);
  }
  matmul(model_->output(), normed_.data(), embd, rows, logits_.data(), c.n_vocab, ws, ws_bytes, pool_);
  if (c.final_logit_softcap > 0) {
    const float cap = c.final_logit_softcap;
    for (int64_t i = 0; i < rows * c.n_vocab; ++i) logits_[i] = cap * std::tanh(logits_[i] / cap);
  }
  position_ += n;
}

}  // namespace frugal
