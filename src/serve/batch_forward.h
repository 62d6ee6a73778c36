// One forward step over tokens of many sequences at once (continuous batching): the decode tokens
// and prompt chunks of every active sequence go through the same matmuls, so each weight matrix
// is read once per step for all of them, while attention reads each token's own sequence from the
// paged KV cache (Yu et al. 2022, "Orca"; Kwon et al. 2023, "PagedAttention").
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "base/thread_pool.h"
#include "kv/paged_kv_cache.h"
#include "model/decoder_block.h"
#include "model/model.h"

namespace frugal::serve {

class BatchForward {
 public:
  // max_tokens: tokens per step at most; max_logit_rows: rows whose logits one step keeps.
  // kv_rotation: rotate heads stored in a quantized cache type (TransformerOptions::kv_rotation).
  BatchForward(std::shared_ptr<const Model> model, PagedKvCache& cache, int64_t max_tokens, int64_t max_logit_rows,
               int n_threads, bool kv_rotation = true);

  // Runs tokens[t] at position positions[t] of the sequence whose block table is tables[t] (its
  // blocks must already be writable for those positions), storing their keys and values, and
  // keeps the logits of the rows listed in logit_rows. Token ids must be inside the vocabulary.
  void run(const int32_t* tokens, const int64_t* positions, const int32_t* const* tables, int64_t n,
           const int64_t* logit_rows, int64_t n_logit_rows);
  // Logits of the i-th row listed in the last run().
  const float* logits(int64_t i) const { return logits_.data() + i * model_->config().n_vocab; }

  const Model& model() const { return *model_; }
  // The step's threads (the engine samples its sequences on them between steps).
  ThreadPool& pool() { return pool_; }
  int64_t max_tokens() const { return max_tokens_; }

 private:
  std::shared_ptr<const Model> model_;
  PagedKvCache& cache_;
  int64_t max_tokens_, max_logit_rows_;
  ThreadPool pool_;
  DecoderBlock block_;
  BlockWorkspace workspace_;
  std::vector<float> residual_, logits_;
  // Quantized cache types store Hadamard-rotated heads, as the single-sequence Transformer does
  // by default (kv/kv_rotation.h), so a sequence gets the same numbers in either.
  bool rotate_keys_, rotate_values_;
};

}  // namespace frugal::serve
