// Quality measurement of a model against a base model and on tasks:
// - next-token distributions compared in one pass over a text (llama-perplexity's chunking):
//   perplexity of both, KL divergence KL(base || model) per token (mean, median, p99, max) and
//   the share of positions where both pick the same top token;
// - zero-shot task accuracy: HellaSwag (Zellers et al. 2019; ending with the highest mean
//   log-likelihood, as llama.cpp scores it) and SST-2 (Socher et al. 2013; " positive" vs
//   " negative" after a review prompt).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/transformer.h"

namespace frugal {

struct DivergenceResult {
  double ppl = 0, ppl_error = 0;
  double base_ppl = 0, base_ppl_error = 0;
  double kld_mean = 0, kld_mean_error = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double same_top_pct = 0;
  int64_t chunks = 0, tokens = 0;
  double seconds = 0;
};

// `model` and `base` must share the vocabulary; both need all_logits and n_batch >= n_ctx.
Result<DivergenceResult> compare_distributions(Transformer& model, Transformer& base, const std::vector<int32_t>& tokens,
                                               int64_t n_ctx, int64_t max_chunks,
                                               const std::function<void(int64_t, int64_t)>& on_chunk);

// The base model's side of compare_distributions kept in a file, so a sweep over many candidates
// evaluates the base once (`frugal eval --save-base FILE`, then `--base-logits FILE`). Per scored
// position it stores the base log-probabilities over the vocabulary as 16-bit steps between their
// minimum and 0 (as llama-perplexity's --kl-divergence-base does; a step is at most |min|/65535,
// about 5e-4 nats) and the base's top token; the header holds the vocabulary size, n_ctx, the chunk
// count and the tokens of every chunk, so a file made for another text, context or model is refused.
struct BaseLogitsOptions {
  std::string save_path;  // compute with `base` and also write here
  std::string load_path;  // read instead of running a base model (`base` may then be null)
};
Result<DivergenceResult> compare_distributions(Transformer& model, Transformer* base, const std::vector<int32_t>& tokens,
                                               int64_t n_ctx, int64_t max_chunks, const BaseLogitsOptions& files,
                                               const std::function<void(int64_t, int64_t)>& on_chunk);

struct HellaswagTask {
  std::string context;
  int gold = 0;
  std::string endings[4];
};
// Parses llama.cpp's plain-text layout: context line, gold index line, four ending lines.
Result<std::vector<HellaswagTask>> parse_hellaswag(const std::string& text);

struct Sst2Example {
  std::string sentence;
  int label = 0;  // 1 = positive
};
// Parses GLUE's SST-2 dev TSV ("sentence<TAB>label" with a header row).
Result<std::vector<Sst2Example>> parse_sst2(const std::string& text);

struct TaskAccuracy {
  int64_t tasks = 0;
  int64_t correct = 0;
  double accuracy_pct() const { return tasks ? 100.0 * static_cast<double>(correct) / static_cast<double>(tasks) : 0; }
  // Binomial standard error of the accuracy, in percentage points.
  double stderr_pct() const;
};

// Evaluates the first `limit` items (all when limit < 0). The transformer needs all_logits.
Result<TaskAccuracy> hellaswag_accuracy(Transformer& transformer, const std::vector<HellaswagTask>& tasks, int64_t limit,
                                        const std::function<void(int64_t, int64_t)>& on_task);
Result<TaskAccuracy> sst2_accuracy(Transformer& transformer, const std::vector<Sst2Example>& examples, int64_t limit,
                                   const std::function<void(int64_t, int64_t)>& on_example);

}  // namespace frugal
