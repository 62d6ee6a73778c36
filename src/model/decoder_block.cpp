// DecoderBlock — pre-norm decoder blocks (Touvron et al. 2023, "LLaMA"):
//   h = x + Wo·Attn(RoPE(Wq·n1(x)), RoPE(Wk·n1(x)), Wv·n1(x));  y = h + Wd·(silu(Wg·n2(h)) ⊙ Wu·n2(h))
// with the Gemma 3 variations switched on by the config: scaled embeddings, per-head q/k norms,
// post-attention/post-FFN norms, GELU gating, and local sliding-window layers with their own
// RoPE base (Gemma Team 2025, arXiv:2503.19786).
#include "model/decoder_block.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "base/check.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kv/kv_cache.h"
#include "kv/kv_rotation.h"

namespace frugal {
namespace {

using names::BlockMatrix;

// Tokens per thread at least for RoPE + the KV store and the gated activation: a batched decode
// step of 16 sequences splits them over two threads (at grain 16 they ran on one while the other
// waited: ~3% of such a step), one decoding token stays on the calling thread.
constexpr int64_t kSmallOpGrain = 8;

// y = x W^T for up to three matrices sharing x, in slices of ws.matmul_tokens rows. One slice (the
// runtime case) is exactly one matmul call.
void multiply(std::span<const MatmulTarget> targets, const float* x, int64_t cols, int64_t n, BlockWorkspace& ws,
              ThreadPool& pool) {
  const size_t ws_bytes = ws.matmul.size() * sizeof(float);
  for (int64_t start = 0; start < n; start += ws.matmul_tokens) {
    const int64_t count = std::min(ws.matmul_tokens, n - start);
    if (targets.size() == 1) {
      matmul(*targets[0].weight, x + start * cols, cols, count, targets[0].y + start * targets[0].y_stride, targets[0].y_stride,
             ws.matmul.data(), ws_bytes, pool);
      continue;
    }
    MatmulTarget slice[3];
    FRUGAL_CHECK(targets.size() <= 3);
    for (size_t i = 0; i < targets.size(); ++i) {
      slice[i] = targets[i];
      slice[i].y += start * targets[i].y_stride;
    }
    matmul_shared_input(std::span<const MatmulTarget>(slice, targets.size()), x + start * cols, cols, count, ws.matmul.data(),
                        ws_bytes, pool);
  }
}

const WeightMatrix& weights_of(const LayerWeights& w, int64_t layer, BlockMatrix m, BlockObserver* observer) {
  return observer ? observer->weights(layer, m, w.matrix(m)) : w.matrix(m);
}

}  // namespace

std::vector<names::BlockMatrix> matrices_reading(BlockInput input) {
  switch (input) {
    case BlockInput::kAttention: return {BlockMatrix::kQ, BlockMatrix::kK, BlockMatrix::kV};
    case BlockInput::kAttentionOutput: return {BlockMatrix::kAttnOutput};
    case BlockInput::kFfn: return {BlockMatrix::kGate, BlockMatrix::kUp};
    case BlockInput::kFfnHidden: return {BlockMatrix::kDown};
  }
  return {};
}

BlockWorkspace::BlockWorkspace(const ModelConfig& c, int64_t max_tokens_in, int64_t matmul_tokens_in, int n_threads)
    : max_tokens(max_tokens_in), matmul_tokens(std::min(max_tokens_in, matmul_tokens_in)) {
  const int64_t b = max_tokens;
  normed.resize(b * std::max(c.n_embd, c.q_dim()));
  q.resize(b * c.q_dim());
  k.resize(b * c.kv_dim());
  v.resize(b * c.kv_dim());
  attn.resize(b * c.q_dim());
  gate.resize(b * c.n_ff);
  up.resize(b * c.n_ff);
  const int64_t widest = std::max({c.n_embd, c.q_dim(), c.n_ff});
  matmul.resize((matmul_workspace_bytes(widest, matmul_tokens, n_threads) + sizeof(float) - 1) / sizeof(float));
}

DecoderBlock::DecoderBlock(const ModelConfig& config)
    : config_(config),
      inv_freq_(rope_inverse_frequencies(config, false)),
      inv_freq_windowed_(rope_inverse_frequencies(config, true)),
      attention_scale_(config.attention_scale > 0 ? config.attention_scale : 1.0f / std::sqrt(static_cast<float>(config.head_dim))) {}

Status DecoderBlock::attention(int64_t layer, const LayerWeights& w, float* residual, const BlockBatch& batch, BlockWorkspace& ws,
                               ThreadPool& pool, BlockObserver* observer) const {
  return attention_stage(layer, w, residual, batch, ws, pool, observer, false);
}

Status DecoderBlock::ffn(int64_t layer, const LayerWeights& w, float* residual, int64_t n, BlockWorkspace& ws, ThreadPool& pool,
                         BlockObserver* observer) const {
  return ffn_stage(layer, w, residual, n, ws, pool, observer, false);
}

Status DecoderBlock::layer(int64_t layer, const LayerWeights& w, float* residual, const BlockBatch& batch, BlockWorkspace& ws,
                           ThreadPool& pool, BlockObserver* observer) const {
  FRUGAL_RETURN_IF_ERROR(attention_stage(layer, w, residual, batch, ws, pool, observer, true));
  return ffn_stage(layer, w, residual, batch.n, ws, pool, observer, true);
}

Status DecoderBlock::attention_stage(int64_t layer, const LayerWeights& w, float* residual, const BlockBatch& batch,
                                     BlockWorkspace& ws, ThreadPool& pool, BlockObserver* observer, bool fuse_ffn_norm) const {
  const ModelConfig& c = config_;
  const int64_t n = batch.n, embd = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim;
  FRUGAL_CHECK(n <= ws.max_tokens);
  const bool windowed = c.layer_is_windowed[layer];
  const float* inv_freq = windowed ? inv_freq_windowed_.data() : inv_freq_.data();
  const int64_t seq = batch.sequence_length;
  // Position of token t, and the key/value row its sequence starts at.
  const PagedBlockView* paged = batch.paged;
  auto position = [&](int64_t t) { return paged ? paged->positions[t] : seq > 0 ? t % seq : batch.pos0 + t; };
  auto sequence_start = [&](int64_t t) { return seq > 0 ? t - t % seq : 0; };
  float* normed = ws.normed.data();
  float* q = ws.q.data();
  float* k = ws.k.data();
  float* v = ws.v.data();
  float* attn = ws.attn.data();
  uint8_t* keys = static_cast<uint8_t*>(batch.keys);
  uint8_t* values = static_cast<uint8_t*>(batch.values);
  const int64_t key_row = kv_row_bytes(batch.key_type, kvd), value_row = kv_row_bytes(batch.value_type, kvd);
  const int64_t key_head = kv_row_bytes(batch.key_type, hd), value_head = kv_row_bytes(batch.value_type, hd);

  pool.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) rms_norm(residual + t * embd, w.attn_norm.data(), c.rms_eps, embd, normed + t * embd);
  });
  if (observer) FRUGAL_RETURN_IF_ERROR(observer->on_input(layer, BlockInput::kAttention, normed, n, embd));
  const MatmulTarget qkv[] = {{&weights_of(w, layer, BlockMatrix::kQ, observer), q, qd},
                              {&weights_of(w, layer, BlockMatrix::kK, observer), k, kvd},
                              {&weights_of(w, layer, BlockMatrix::kV, observer), v, kvd}};
  multiply(qkv, normed, embd, n, ws, pool);
  pool.parallel_for(n, kSmallOpGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (c.qk_norm) {
        for (int64_t h = 0; h < c.n_head; ++h) rms_norm(q + t * qd + h * hd, w.q_norm.data(), c.rms_eps, hd, q + t * qd + h * hd);
        for (int64_t h = 0; h < c.n_head_kv; ++h) rms_norm(k + t * kvd + h * hd, w.k_norm.data(), c.rms_eps, hd, k + t * kvd + h * hd);
      }
      const int64_t pos = position(t);
      rope(q + t * qd, c.n_head, hd, c.rope_dim, pos, inv_freq, c.rope_style);
      rope(k + t * kvd, c.n_head_kv, hd, c.rope_dim, pos, inv_freq, c.rope_style);
      if (batch.rotate_keys) {
        hadamard_transform_heads(q + t * qd, c.n_head, hd);
        hadamard_transform_heads(k + t * kvd, c.n_head_kv, hd);
      }
      if (batch.rotate_values) hadamard_transform_heads(v + t * kvd, c.n_head_kv, hd);
      if (paged) {
        const PagedKvRows key_rows{keys, paged->block_tables[t], paged->key_block_bytes, paged->block_shift, key_row, batch.key_type};
        const PagedKvRows value_rows{values, paged->block_tables[t], paged->value_block_bytes, paged->block_shift, value_row,
                                     batch.value_type};
        KvCache::store(k + t * kvd, kvd, batch.key_type, const_cast<uint8_t*>(key_rows.row(pos)));
        KvCache::store(v + t * kvd, kvd, batch.value_type, const_cast<uint8_t*>(value_rows.row(pos)));
        continue;
      }
      const int64_t row = sequence_start(t) + pos;
      KvCache::store(k + t * kvd, kvd, batch.key_type, keys + row * key_row);
      KvCache::store(v + t * kvd, kvd, batch.value_type, values + row * value_row);
    }
  });
  // Causal attention: token t sees positions [0, pos(t)] of its sequence (a windowed layer only
  // the last sliding_window of them); one task per (token, head).
  const int64_t group = c.n_head / c.n_head_kv;
  // Token t's key and value rows of one KV head (paged or contiguous) and the positions it sees,
  // handed to attend(keys, values, first, last).
  auto with_kv_rows = [&](int64_t t, int64_t kv_head, auto&& attend) {
    const int64_t pos = position(t);
    const int64_t first = windowed ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
    if (paged) {
      const PagedKvRows key_rows{keys + kv_head * key_head, paged->block_tables[t], paged->key_block_bytes, paged->block_shift,
                                 key_row, batch.key_type};
      const PagedKvRows value_rows{values + kv_head * value_head, paged->block_tables[t], paged->value_block_bytes,
                                   paged->block_shift, value_row, batch.value_type};
      attend(key_rows, value_rows, first, pos);
    } else {
      const int64_t start = sequence_start(t);
      const KvRows key_rows{keys + start * key_row + kv_head * key_head, key_row, batch.key_type};
      const KvRows value_rows{values + start * value_row + kv_head * value_head, value_row, batch.value_type};
      attend(key_rows, value_rows, first, pos);
    }
  };
  // With enough tokens for every thread (a batch, a prompt), one task per (token, KV head) runs
  // its `group` query heads together, reading each key and value row once for all of them
  // (attend_heads: the same bits per head as attend_one_head). A single decoding token keeps one
  // task per query head, which splits its few heads more evenly between the threads.
  if (group > 1 && n * c.n_head_kv >= 4 * pool.size()) {
    pool.parallel_for(n * c.n_head_kv, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / c.n_head_kv, kv_head = task % c.n_head_kv, h0 = kv_head * group;
        with_kv_rows(t, kv_head, [&](const auto& key_rows, const auto& value_rows, int64_t first, int64_t last) {
          attend_heads(q + t * qd + h0 * hd, group, key_rows, value_rows, first, last, hd, attention_scale_, attn + t * qd + h0 * hd);
        });
        if (batch.rotate_values) {
          for (int64_t h = h0; h < h0 + group; ++h) hadamard_transform(attn + t * qd + h * hd, hd);
        }
      }
    });
  } else {
    pool.parallel_for(n * c.n_head, 4, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / c.n_head, h = task % c.n_head;
        with_kv_rows(t, h / group, [&](const auto& key_rows, const auto& value_rows, int64_t first, int64_t last) {
          attend_one_head(q + t * qd + h * hd, key_rows, value_rows, first, last, hd, attention_scale_, attn + t * qd + h * hd);
        });
        // Rotated values give the rotated output (attention is linear in V); rotate it back.
        if (batch.rotate_values) hadamard_transform(attn + t * qd + h * hd, hd);
      }
    });
  }
  if (observer) FRUGAL_RETURN_IF_ERROR(observer->on_input(layer, BlockInput::kAttentionOutput, attn, n, qd));
  const MatmulTarget output[] = {{&weights_of(w, layer, BlockMatrix::kAttnOutput, observer), normed, embd}};
  multiply(output, attn, qd, n, ws, pool);
  pool.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* x = residual + t * embd;
      float* o = normed + t * embd;
      if (c.post_norms) rms_norm(o, w.post_attn_norm.data(), c.rms_eps, embd, o);
      for (int64_t i = 0; i < embd; ++i) x[i] += o[i];
      if (fuse_ffn_norm) rms_norm(x, w.ffn_norm.data(), c.rms_eps, embd, o);
    }
  });
  return Status::ok();
}

Status DecoderBlock::ffn_stage(int64_t layer, const LayerWeights& w, float* residual, int64_t n, BlockWorkspace& ws,
                               ThreadPool& pool, BlockObserver* observer, bool normed_ready) const {
  const ModelConfig& c = config_;
  const int64_t embd = c.n_embd, ff = c.n_ff;
  FRUGAL_CHECK(n <= ws.max_tokens);
  float* normed = ws.normed.data();
  float* gate = ws.gate.data();
  float* up = ws.up.data();
  if (!normed_ready) {
    pool.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) rms_norm(residual + t * embd, w.ffn_norm.data(), c.rms_eps, embd, normed + t * embd);
    });
  }
  if (observer) FRUGAL_RETURN_IF_ERROR(observer->on_input(layer, BlockInput::kFfn, normed, n, embd));
  const MatmulTarget gate_up[] = {{&weights_of(w, layer, BlockMatrix::kGate, observer), gate, ff},
                                  {&weights_of(w, layer, BlockMatrix::kUp, observer), up, ff}};
  multiply(gate_up, normed, embd, n, ws, pool);
  pool.parallel_for(n, kSmallOpGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (c.ffn_activation == Activation::kGeluTanh) {
        geglu(gate + t * ff, up + t * ff, ff);
      } else {
        swiglu(gate + t * ff, up + t * ff, ff);
      }
    }
  });
  if (observer) FRUGAL_RETURN_IF_ERROR(observer->on_input(layer, BlockInput::kFfnHidden, gate, n, ff));
  const MatmulTarget down[] = {{&weights_of(w, layer, BlockMatrix::kDown, observer), normed, embd}};
  multiply(down, gate, ff, n, ws, pool);
  pool.parallel_for(n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* x = residual + t * embd;
      float* o = normed + t * embd;
      if (c.post_norms) rms_norm(o, w.post_ffn_norm.data(), c.rms_eps, embd, o);
      for (int64_t i = 0; i < embd; ++i) x[i] += o[i];
    }
  });
  return Status::ok();
}

void embed_tokens(const Model& model, const int32_t* tokens, int64_t n, float* x, ThreadPool& pool) {
  const WeightMatrix& embedding = model.token_embedding();
  const int64_t embd = model.config().n_embd;
  const float scale = model.config().embedding_scale;
  pool.parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* row = x + t * embd;
      embedding.traits->dequantize_row(embedding.row(tokens[t]), row, embd);
      if (scale != 1.0f) {
        for (int64_t i = 0; i < embd; ++i) row[i] *= scale;
      }
    }
  });
}

}  // namespace frugal
