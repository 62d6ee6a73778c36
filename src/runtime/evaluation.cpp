// compare_distributions, HellaSwag and SST-2 scoring (see evaluation.h).
#include "runtime/evaluation.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "base/timer.h"

namespace frugal {
namespace {

// Log-softmax of one logit row, in double.
void log_softmax(const float* logits, int64_t n, std::vector<double>& out) {
  double max = logits[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - max);
  const double log_sum = std::log(sum) + max;
  for (int64_t i = 0; i < n; ++i) out[i] = logits[i] - log_sum;
}

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  const size_t k = std::min(values.size() - 1, static_cast<size_t>(q * static_cast<double>(values.size() - 1) + 0.5));
  std::nth_element(values.begin(), values.begin() + static_cast<int64_t>(k), values.end());
  return values[k];
}

// Sum of log p(continuation | prefix) and its token count. The cache is rewound to the prefix
// minus its last token, so consecutive calls with the same prefix reuse it.
Result<double> continuation_logprob(Transformer& t, const std::vector<int32_t>& prefix, const std::vector<int32_t>& continuation,
                                    bool prefix_cached) {
  if (prefix.empty() || continuation.empty()) return Status::error("empty prefix or continuation");
  if (static_cast<int64_t>(prefix.size() + continuation.size()) > t.context_size()) {
    return Status::error("sequence longer than the context");
  }
  if (!prefix_cached) {
    t.truncate(0);
    if (prefix.size() > 1) FRUGAL_RETURN_IF_ERROR(t.evaluate(prefix.data(), static_cast<int64_t>(prefix.size() - 1)));
  } else {
    t.truncate(static_cast<int64_t>(prefix.size() - 1));
  }
  std::vector<int32_t> step;
  step.push_back(prefix.back());
  step.insert(step.end(), continuation.begin(), continuation.end() - 1);
  FRUGAL_RETURN_IF_ERROR(t.evaluate(step.data(), static_cast<int64_t>(step.size())));
  const int64_t vocab = t.model().config().n_vocab;
  double sum = 0;
  std::vector<double> lp(vocab);
  for (size_t i = 0; i < continuation.size(); ++i) {
    log_softmax(t.logits(static_cast<int64_t>(i)), vocab, lp);
    sum += lp[continuation[i]];
  }
  return sum;
}

}  // namespace

double TaskAccuracy::stderr_pct() const {
  if (tasks < 2) return 0;
  const double p = static_cast<double>(correct) / static_cast<double>(tasks);
  return 100.0 * std::sqrt(p * (1 - p) / static_cast<double>(tasks - 1));
}

Result<DivergenceResult> compare_distributions(Transformer& model, Transformer& base, const std::vector<int32_t>& tokens,
                                               int64_t n_ctx, int64_t max_chunks,
                                               const std::function<void(int64_t, int64_t)>& on_chunk) {
  const int64_t vocab = base.model().config().n_vocab;
  if (model.model().config().n_vocab != vocab) {
    return Status::error("the model and the base have different vocabularies (" + std::to_string(model.model().config().n_vocab) +
                         " vs " + std::to_string(vocab) + " tokens)");
  }
  int64_t total = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (total == 0) return Status::error("the text is shorter than one chunk of " + std::to_string(n_ctx) + " tokens");
  if (max_chunks > 0) total = std::min(total, max_chunks);
  const Tokenizer& tokenizer = base.model().tokenizer();
  const bool add_bos = tokenizer.vocab().add_bos && tokenizer.bos() >= 0;

  DivergenceResult r;
  Timer timer;
  std::vector<double> lp_model(vocab), lp_base(vocab), klds;
  double nll = 0, nll2 = 0, base_nll = 0, base_nll2 = 0;
  int64_t same_top = 0;
  std::vector<int32_t> chunk(n_ctx);
  for (int64_t c = 0; c < total; ++c) {
    std::copy_n(tokens.begin() + c * n_ctx, n_ctx, chunk.begin());
    if (add_bos) chunk[0] = tokenizer.bos();
    model.truncate(0);
    base.truncate(0);
    FRUGAL_RETURN_IF_ERROR(model.evaluate(chunk.data(), n_ctx));
    FRUGAL_RETURN_IF_ERROR(base.evaluate(chunk.data(), n_ctx));
    for (int64_t i = n_ctx / 2; i < n_ctx - 1; ++i) {
      const float* lm = model.logits(i);
      const float* lb = base.logits(i);
      log_softmax(lm, vocab, lp_model);
      log_softmax(lb, vocab, lp_base);
      double kld = 0;
      int64_t top_model = 0, top_base = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        kld += std::exp(lp_base[v]) * (lp_base[v] - lp_model[v]);
        if (lm[v] > lm[top_model]) top_model = v;
        if (lb[v] > lb[top_base]) top_base = v;
      }
      klds.push_back(std::max(0.0, kld));
      same_top += top_model == top_base;
      const int32_t target = tokens[c * n_ctx + i + 1];
      nll -= lp_model[target];
      nll2 += lp_model[target] * lp_model[target];
      base_nll -= lp_base[target];
      base_nll2 += lp_base[target] * lp_base[target];
    }
    ++r.chunks;
    if (on_chunk) on_chunk(c + 1, total);
  }
  const double n = static_cast<double>(klds.size());
  r.tokens = static_cast<int64_t>(klds.size());
  auto ppl_and_error = [n](double sum, double sum2, double* ppl, double* error) {
    const double mean = sum / n;
    const double variance = sum2 / n - mean * mean;
    *ppl = std::exp(mean);
    *error = variance > 0 && n > 1 ? std::sqrt(variance / (n - 1)) * *ppl : 0;
  };
  ppl_and_error(nll, nll2, &r.ppl, &r.ppl_error);
  ppl_and_error(base_nll, base_nll2, &r.base_ppl, &r.base_ppl_error);
  double sum = 0, sum2 = 0;
  for (double k : klds) {
    sum += k;
    sum2 += k * k;
    r.kld_max = std::max(r.kld_max, k);
  }
  r.kld_mean = sum / n;
  r.kld_mean_error = n > 1 ? std::sqrt(std::max(0.0, sum2 / n - r.kld_mean * r.kld_mean) / (n - 1)) : 0;
  r.kld_median = percentile(klds, 0.5);
  r.kld_p99 = percentile(klds, 0.99);
  r.same_top_pct = 100.0 * static_cast<double>(same_top) / n;
  r.seconds = timer.seconds();
  return r;
}

Result<std::vector<HellaswagTask>> parse_hellaswag(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.empty() || lines.size() % 6 != 0) {
    return Status::error("HellaSwag file must hold groups of 6 lines (context, gold index, 4 endings); got " +
                         std::to_string(lines.size()) + " lines");
  }
  std::vector<HellaswagTask> tasks(lines.size() / 6);
  for (size_t i = 0; i < tasks.size(); ++i) {
    HellaswagTask& t = tasks[i];
    t.context = lines[6 * i];
    const std::string& gold = lines[6 * i + 1];
    if (gold.size() != 1 || gold[0] < '0' || gold[0] > '3') {
      return Status::error("HellaSwag task " + std::to_string(i + 1) + ": gold index must be 0-3, got '" + gold + "'");
    }
    t.gold = gold[0] - '0';
    for (int e = 0; e < 4; ++e) t.endings[e] = lines[6 * i + 2 + e];
  }
  return tasks;
}

Result<std::vector<Sst2Example>> parse_sst2(const std::string& text) {
  std::vector<Sst2Example> out;
  std::istringstream in(text);
  std::string line;
  bool header = true;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (header) {
      header = false;
      if (line.rfind("sentence", 0) == 0 || line.rfind("text", 0) == 0) continue;
    }
    const auto tab = line.rfind('\t');
    if (tab == std::string::npos || tab + 2 != line.size() || (line[tab + 1] != '0' && line[tab + 1] != '1')) {
      return Status::error("SST-2 line " + std::to_string(number) + " is not 'sentence<TAB>0|1'");
    }
    Sst2Example e;
    e.sentence = line.substr(0, tab);
    while (!e.sentence.empty() && e.sentence.back() == ' ') e.sentence.pop_back();
    e.label = line[tab + 1] - '0';
    out.push_back(std::move(e));
  }
  if (out.empty()) return Status::error("no SST-2 examples found");
  return out;
}

Result<TaskAccuracy> hellaswag_accuracy(Transformer& t, const std::vector<HellaswagTask>& tasks, int64_t limit,
                                        const std::function<void(int64_t, int64_t)>& on_task) {
  const Tokenizer& tokenizer = t.model().tokenizer();
  const int64_t n = limit < 0 ? static_cast<int64_t>(tasks.size()) : std::min<int64_t>(limit, static_cast<int64_t>(tasks.size()));
  TaskAccuracy result;
  for (int64_t i = 0; i < n; ++i) {
    const HellaswagTask& task = tasks[i];
    // As llama.cpp: tokenize "context ending" whole, score the tokens after the shared prefix,
    // and compare endings by their mean log-likelihood per token.
    std::vector<std::vector<int32_t>> full(4);
    for (int e = 0; e < 4; ++e) full[e] = tokenizer.encode(task.context + " " + task.endings[e], true, false);
    size_t common = full[0].size();
    for (int e = 1; e < 4; ++e) {
      size_t k = 0;
      while (k < common && k < full[e].size() && full[e][k] == full[0][k]) ++k;
      common = k;
    }
    common = std::max<size_t>(common, 1);
    const std::vector<int32_t> prefix(full[0].begin(), full[0].begin() + static_cast<int64_t>(common));
    double best = -1e300;
    int best_ending = -1;
    for (int e = 0; e < 4; ++e) {
      const std::vector<int32_t> ending(full[e].begin() + static_cast<int64_t>(common), full[e].end());
      if (ending.empty()) continue;
      auto lp = continuation_logprob(t, prefix, ending, e > 0);
      if (!lp) return lp.status();
      const double score = lp.value() / static_cast<double>(ending.size());
      if (score > best) {
        best = score;
        best_ending = e;
      }
    }
    ++result.tasks;
    result.correct += best_ending == task.gold;
    if (on_task) on_task(i + 1, n);
  }
  return result;
}

Result<TaskAccuracy> sst2_accuracy(Transformer& t, const std::vector<Sst2Example>& examples, int64_t limit,
                                   const std::function<void(int64_t, int64_t)>& on_example) {
  const Tokenizer& tokenizer = t.model().tokenizer();
  const std::vector<int32_t> positive = tokenizer.encode(" positive", false, false);
  const std::vector<int32_t> negative = tokenizer.encode(" negative", false, false);
  const int64_t n = limit < 0 ? static_cast<int64_t>(examples.size()) : std::min<int64_t>(limit, static_cast<int64_t>(examples.size()));
  TaskAccuracy result;
  for (int64_t i = 0; i < n; ++i) {
    const std::string prompt = "Review: " + examples[i].sentence + "\nSentiment:";
    const std::vector<int32_t> prefix = tokenizer.encode(prompt, true, false);
    auto lp_positive = continuation_logprob(t, prefix, positive, false);
    if (!lp_positive) return lp_positive.status();
    auto lp_negative = continuation_logprob(t, prefix, negative, true);
    if (!lp_negative) return lp_negative.status();
    const int predicted = lp_positive.value() > lp_negative.value() ? 1 : 0;
    ++result.tasks;
    result.correct += predicted == examples[i].label;
    if (on_example) on_example(i + 1, n);
  }
  return result;
}

}  // namespace frugal
