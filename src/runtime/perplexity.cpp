// compute_perplexity: chunked scoring with the same chunking, BOS and error estimate as
// llama.cpp's perplexity tool, so the two numbers can be compared directly.
#include "runtime/perplexity.h"

#include <cmath>

#include "base/timer.h"

namespace frugal {

double log_softmax_at(const float* logits, int64_t n_vocab, int32_t target) {
  float max = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) max = std::max(max, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return static_cast<double>(logits[target]) - max - std::log(sum);
}

Result<PerplexityResult> compute_perplexity(Transformer& transformer, const std::vector<int32_t>& tokens,
                                            const PerplexityOptions& options,
                                            const std::function<void(int64_t, int64_t, double)>& on_chunk) {
  const int64_t n_ctx = options.n_ctx;
  if (n_ctx < 8) return Status::error("perplexity context must be at least 8 tokens");
  if (n_ctx > transformer.context_size()) return Status::error("perplexity context is larger than the model context");
  int64_t total = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (total == 0) {
    return Status::error("the text has " + std::to_string(tokens.size()) + " tokens; at least " +
                         std::to_string(n_ctx) + " (one chunk of -c) are needed");
  }
  if (options.max_chunks > 0) total = std::min(total, options.max_chunks);
  const Tokenizer& tokenizer = transformer.model().tokenizer();
  const bool add_bos = tokenizer.vocab().add_bos && tokenizer.bos() >= 0;
  const int64_t n_vocab = transformer.model().config().n_vocab;
  const int64_t first = n_ctx / 2;

  PerplexityResult result;
  Timer timer;
  double nll = 0, nll_squared = 0;
  std::vector<int32_t> chunk(n_ctx);
  for (int64_t c = 0; c < total; ++c) {
    std::copy_n(tokens.begin() + c * n_ctx, n_ctx, chunk.begin());
    if (add_bos) chunk[0] = tokenizer.bos();
    transformer.truncate(0);
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(chunk.data(), n_ctx));
    for (int64_t i = first; i < n_ctx - 1; ++i) {
      const double token_nll = -log_softmax_at(transformer.logits(i), n_vocab, tokens[c * n_ctx + i + 1]);
      nll += token_nll;
      nll_squared += token_nll * token_nll;
      ++result.scored_tokens;
    }
    result.running_ppl.push_back(std::exp(nll / static_cast<double>(result.scored_tokens)));
    ++result.chunks;
    if (on_chunk) on_chunk(c + 1, total, result.running_ppl.back());
  }
  const double count = static_cast<double>(result.scored_tokens);
  const double mean = nll / count;
  const double variance = nll_squared / count - mean * mean;
  result.ppl = std::exp(mean);
  result.ppl_error = variance > 0 && count > 1 ? std::sqrt(variance / (count - 1)) * result.ppl : 0;
  result.seconds = timer.seconds();
  return result;
}

Result<PerplexityResult> compute_streaming_perplexity(Transformer& transformer, const std::vector<int32_t>& tokens,
                                                      int64_t max_tokens, int64_t batch,
                                                      const std::function<void(int64_t, int64_t, double)>& on_batch) {
  int64_t n = static_cast<int64_t>(tokens.size());
  if (max_tokens > 0) n = std::min(n, max_tokens);
  if (n < 2) return Status::error("streaming perplexity needs at least 2 tokens");
  if (batch < 1) return Status::error("streaming perplexity needs a batch of at least 1 token");
  const int64_t n_vocab = transformer.model().config().n_vocab;
  const int64_t total = (n - 1 + batch - 1) / batch;
  PerplexityResult result;
  Timer timer;
  double nll = 0, nll_squared = 0;
  transformer.truncate(0);
  // Token i's logits predict token i + 1; the last token is fed only as a target.
  for (int64_t start = 0, b = 0; start < n - 1; start += batch, ++b) {
    const int64_t count = std::min(batch, n - 1 - start);
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(tokens.data() + start, count));
    for (int64_t i = 0; i < count; ++i) {
      const double token_nll = -log_softmax_at(transformer.logits(i), n_vocab, tokens[start + i + 1]);
      nll += token_nll;
      nll_squared += token_nll * token_nll;
      ++result.scored_tokens;
    }
    result.running_ppl.push_back(std::exp(nll / static_cast<double>(result.scored_tokens)));
    ++result.chunks;
    if (on_batch) on_batch(b + 1, total, result.running_ppl.back());
  }
  const double count = static_cast<double>(result.scored_tokens);
  const double mean = nll / count;
  const double variance = nll_squared / count - mean * mean;
  result.ppl = std::exp(mean);
  result.ppl_error = variance > 0 && count > 1 ? std::sqrt(variance / (count - 1)) * result.ppl : 0;
  result.seconds = timer.seconds();
  return result;
}

}  // namespace frugal
