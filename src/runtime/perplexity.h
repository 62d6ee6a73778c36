// Perplexity by llama.cpp's method (llama-perplexity): the text is cut into non-overlapping
// chunks of n_ctx tokens (the first token of each replaced by BOS when the model adds one), and
// only the second half of each chunk is scored, so every scored token has >= n_ctx/2 of context.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/transformer.h"

namespace frugal {

struct PerplexityOptions {
  int64_t n_ctx = 512;
  int64_t max_chunks = -1;  // -1: all
};

struct PerplexityResult {
  double ppl = 0;
  double ppl_error = 0;     // llama.cpp's estimate: stddev of token NLL / sqrt(count) * ppl
  int64_t chunks = 0;
  int64_t scored_tokens = 0;
  std::vector<double> running_ppl;  // after each chunk
  std::vector<int64_t> scored_at;   // streaming forms: tokens scored after each batch
  std::vector<double> seconds_at;   // streaming forms: seconds since the start after each batch
  double seconds = 0;
};

// Log-probability of `target` under softmax(logits), computed in double.
double log_softmax_at(const float* logits, int64_t n_vocab, int32_t target);

// `on_chunk(done, total, running_ppl)` is called after every chunk.
Result<PerplexityResult> compute_perplexity(Transformer& transformer, const std::vector<int32_t>& tokens,
                                            const PerplexityOptions& options,
                                            const std::function<void(int64_t, int64_t, double)>& on_chunk);

// Streaming perplexity under a rolling cache (TransformerOptions::window; StreamingLLM, Xiao et al.
// 2023): the first `max_tokens` tokens (all if <= 0) are fed as one stream in batches of the
// transformer's n_batch (all_logits must be on) and every token after the first is scored, so
// the text may be far longer than the window. running_ppl holds the PPL after each batch.
Result<PerplexityResult> compute_streaming_perplexity(Transformer& transformer, const std::vector<int32_t>& tokens,
                                                      int64_t max_tokens, int64_t batch,
                                                      const std::function<void(int64_t, int64_t, double)>& on_batch);

// The "sliding window with re-computation" baseline of StreamingLLM (Xiao et al. 2023, sec. 4.1):
// every token is predicted from at most the `window` tokens before it, recomputed in a fresh cache
// (positions from 0), so no state is carried over and nothing is evicted. `stride` tokens are
// scored per recomputation (1 = the paper's exact form; s > 1 gives each token between
// window - s + 1 and window tokens of context and costs 1/s as much). The first `max_tokens`
// tokens (all if <= 0); the transformer needs n_ctx and n_batch >= window and all_logits.
Result<PerplexityResult> compute_recompute_perplexity(Transformer& transformer, const std::vector<int32_t>& tokens,
                                                      int64_t max_tokens, int64_t window, int64_t stride,
                                                      const std::function<void(int64_t, int64_t, double)>& on_batch);

}  // namespace frugal
