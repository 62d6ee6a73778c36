// compute_perplexity: chunked scoring with the same chunking, BOS and error estimate as
// llama.cpp's perplexity tool, so the two numbers can be compared directly.
#include "runtime/perplexity.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/timer.h"

namespace frugal {

double log_softmax_at(const float* logits, int64_t n_vocab, int32_t target) {
  float max = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) max = std::max(max, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return static_cast<double>(logits[target]) - max - std::log(sum);
}

namespace {

// Negative log-likelihoods of scored tokens: running perplexity and llama.cpp's error estimate
// (standard error of the mean NLL, propagated through exp).
class NllAccumulator {
 public:
  void add(double token_nll) {
    sum_ += token_nll;
    sum_squared_ += token_nll * token_nll;
    ++count_;
  }
  int64_t count() const { return count_; }
  double perplexity() const { return std::exp(sum_ / static_cast<double>(count_)); }
  void finish(PerplexityResult& result) const {
    const double count = static_cast<double>(count_);
    const double mean = sum_ / count;
    const double variance = sum_squared_ / count - mean * mean;
    result.scored_tokens = count_;
    result.ppl = std::exp(mean);
    result.ppl_error = variance > 0 && count > 1 ? std::sqrt(variance / (count - 1)) * result.ppl : 0;
  }

 private:
  double sum_ = 0, sum_squared_ = 0;
  int64_t count_ = 0;
};

// One pass of a streaming run: the running perplexity and the trace the plots read (tokens scored
// so far, seconds since the start).
void record_stream_pass(PerplexityResult& result, const NllAccumulator& nll, int64_t scored_through, double seconds) {
  result.running_ppl.push_back(nll.perplexity());
  result.scored_at.push_back(scored_through);
  result.seconds_at.push_back(seconds);
  ++result.chunks;
}

}  // namespace

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
  NllAccumulator nll;
  std::vector<int32_t> chunk(n_ctx);
  for (int64_t c = 0; c < total; ++c) {
    std::copy_n(tokens.begin() + c * n_ctx, n_ctx, chunk.begin());
    if (add_bos) chunk[0] = tokenizer.bos();
    transformer.truncate(0);
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(chunk.data(), n_ctx));
    for (int64_t i = first; i < n_ctx - 1; ++i) {
      nll.add(-log_softmax_at(transformer.logits(i), n_vocab, tokens[c * n_ctx + i + 1]));
    }
    result.running_ppl.push_back(nll.perplexity());
    ++result.chunks;
    if (on_chunk) on_chunk(c + 1, total, result.running_ppl.back());
  }
  nll.finish(result);
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
  NllAccumulator nll;
  transformer.truncate(0);
  // Token i's logits predict token i + 1; the last token is fed only as a target.
  for (int64_t start = 0, b = 0; start < n - 1; start += batch, ++b) {
    const int64_t count = std::min(batch, n - 1 - start);
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(tokens.data() + start, count));
    for (int64_t i = 0; i < count; ++i) {
      nll.add(-log_softmax_at(transformer.logits(i), n_vocab, tokens[start + i + 1]));
    }
    record_stream_pass(result, nll, start + count, timer.seconds());
    if (on_batch) on_batch(b + 1, total, result.running_ppl.back());
  }
  nll.finish(result);
  result.seconds = timer.seconds();
  return result;
}

Result<PerplexityResult> compute_recompute_perplexity(Transformer& transformer, const std::vector<int32_t>& tokens,
                                                      int64_t max_tokens, int64_t window, int64_t stride,
                                                      const std::function<void(int64_t, int64_t, double)>& on_batch) {
  int64_t n = static_cast<int64_t>(tokens.size());
  if (max_tokens > 0) n = std::min(n, max_tokens);
  if (n < 2) return Status::error("windowed-recompute perplexity needs at least 2 tokens");
  if (window < 1 || stride < 1 || stride > window) {
    return Status::error("windowed-recompute perplexity needs 1 <= stride <= window, got stride " + std::to_string(stride) +
                         " and window " + std::to_string(window));
  }
  const int64_t n_vocab = transformer.model().config().n_vocab;
  const int64_t total = (n - 1 + stride - 1) / stride;
  PerplexityResult result;
  Timer timer;
  NllAccumulator nll;
  // Tokens s .. s + count - 1 predict their successors; the pass feeds the window ending at the
  // last of them, so token t sees tokens max(0, end - window) .. t.
  for (int64_t s = 0, b = 0; s < n - 1; s += stride, ++b) {
    const int64_t count = std::min(stride, n - 1 - s);
    const int64_t end = s + count;  // one past the last fed token
    const int64_t begin = std::max<int64_t>(0, end - window);
    transformer.truncate(0);
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(tokens.data() + begin, end - begin));
    for (int64_t t = s; t < end; ++t) {
      nll.add(-log_softmax_at(transformer.logits(t - begin), n_vocab, tokens[t + 1]));
    }
    record_stream_pass(result, nll, end, timer.seconds());
    if (on_batch) on_batch(b + 1, total, result.running_ppl.back());
  }
  nll.finish(result);
  result.seconds = timer.seconds();
  return result;
}

}  // namespace frugal
