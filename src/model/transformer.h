// The Llama-family forward pass over a KV cache: batched prefill and one-token decode share one
// code path (a batch of n tokens at consecutive positions). Workspaces are sized at construction,
// so evaluating tokens allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/decoder_block.h"
#include "model/model.h"

namespace frugal {

struct TransformerOptions {
  int64_t n_ctx = 2048;   // KV cache positions
  int64_t n_batch = 512;  // tokens per forward step (longer inputs are split)
  int n_threads = 2;
  // Run on this pool instead of an own pool of n_threads (it must outlive the Transformer). For
  // models that take turns on the same cores, as a draft model and its target: two pools would
  // leave one pool's workers spinning (ThreadPool spins before it sleeps) while the other works.
  ThreadPool* shared_pool = nullptr;
  // Logit rows kept per call: 1 (just the last token, for generation) or n_batch (perplexity).
  bool all_logits = false;
  // Without all_logits: room for this many rows, which evaluate_keeping_logits() fills (a draft
  // model's choices over the prompt's last tokens, runtime/speculative.h).
  int64_t kept_logit_rows = 1;
  // Runs only the first exit_layer blocks, then the final norm and head (early exit, for a
  // self-draft sharing the model's weights; Elhoushi et al. 2024, "LayerSkip"). 0: all blocks.
  int64_t exit_layer = 0;
  KvType cache_type_k = KvType::kF16;  // -ctk
  KvType cache_type_v = KvType::kF16;  // -ctv
  // Hadamard-rotate heads stored in a quantized cache type (kv/kv_rotation.h); off only to
  // measure what the rotation buys.
  bool kv_rotation = true;
  // Rolling cache (StreamingLLM, Xiao et al. 2023): window > 0 keeps at most `window` positions
  // (the cache holds min(n_ctx, window)); when a batch does not fit, the oldest tokens after the
  // first `sinks` ("attention sinks") are dropped and the kept keys re-rotated to their new
  // positions, so generation continues in constant memory. 0: the context simply fills.
  int64_t window = 0;
  int64_t sinks = 4;
};

// Checks options against a model (cache types vs head size, window vs sinks).
Status check_transformer_options(const ModelConfig& config, const TransformerOptions& options);

class Transformer {
 public:
  Transformer(std::shared_ptr<const Model> model, const TransformerOptions& options);

  // Appends `n` tokens at the current position. Logits are kept for the last token, or for every
  // token when options.all_logits (then n must be <= n_batch). Errors: context overflow, bad ids.
  Status evaluate(const int32_t* tokens, int64_t n);
  // evaluate() keeping the logits of all n tokens (n <= options.kept_logit_rows and n_batch).
  Status evaluate_keeping_logits(const int32_t* tokens, int64_t n);

  // Logits of the i-th token of the last evaluate() call (only the last one unless all_logits).
  const float* logits(int64_t i) const;
  const float* last_logits() const { return logits(last_count_ - 1); }
  // The hidden state (residual stream after the last block, before the output norm) of the i-th
  // token of the last batch the last evaluate() call ran (n_embd floats).
  const float* hidden_state(int64_t i) const;

  int64_t position() const { return position_; }
  // Positions the cache holds (the window when rolling).
  int64_t context_size() const { return cache_.capacity(); }
  bool rolling() const { return options_.window > 0; }
  // Forgets everything after `position` tokens (0 clears the cache).
  void truncate(int64_t position);

  const Model& model() const { return *model_; }
  ThreadPool& pool() { return pool_; }
  size_t kv_cache_bytes() const { return cache_.bytes(); }
  int64_t kv_bytes_per_token() const { return cache_.bytes_per_token(); }
  const KvCache& kv_cache() const { return cache_; }
  // Whether the cache holds Hadamard-rotated keys / values (TransformerOptions::kv_rotation).
  bool rotates_keys() const { return rotate_keys_; }
  bool rotates_values() const { return rotate_values_; }
  // Tokens dropped by the rolling cache so far (0 without a window).
  int64_t evicted() const { return evicted_; }

 private:
  Status evaluate(const int32_t* tokens, int64_t n, bool keep_all_logits);
  void forward_batch(const int32_t* tokens, int64_t n, bool keep_all_logits);
  // Makes room for n more tokens in the rolling cache (see TransformerOptions::window).
  void evict_for(int64_t n);

  std::shared_ptr<const Model> model_;
  TransformerOptions options_;
  std::unique_ptr<ThreadPool> own_pool_;  // null with options.shared_pool
  ThreadPool& pool_;
  KvCache cache_;
  int64_t position_ = 0;
  int64_t last_count_ = 0;
  int64_t evicted_ = 0;
  std::vector<float> shift_row_;

  DecoderBlock block_;
  BlockWorkspace workspace_;
  bool rotate_keys_, rotate_values_;  // see TransformerOptions::kv_rotation
  std::vector<float> residual_, logits_;
  int64_t last_batch_ = 0;
};

}  // namespace frugal
