// compare_distributions, HellaSwag and SST-2 scoring (see evaluation.h).
#include "runtime/evaluation.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <sstream>

#include "base/temp_files.h"
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

namespace {

constexpr char kBaseMagic[8] = {'F', 'R', 'G', 'L', 'K', 'L', 'D', '1'};

// One scored position of the base: its log-probabilities in 16-bit steps and its top token.
struct BaseRecordHeader {
  float min_logprob;
  float step;
  int32_t top;
  int32_t reserved;
};

class BaseFile {
 public:
  ~BaseFile() {
    if (f_ != nullptr) {
      std::fclose(f_);
      if (writing_) {
        std::remove(temp_.c_str());
        unregister_temp_file(temp_);
      }
    }
  }

  Status create(const std::string& path, int64_t vocab, int64_t n_ctx, int64_t chunks, const std::vector<int32_t>& tokens) {
    path_ = path;
    temp_ = path + ".tmp-" + std::to_string(getpid());
    register_temp_file(temp_);
    f_ = std::fopen(temp_.c_str(), "wb");
    writing_ = true;
    if (f_ == nullptr) return Status::error("cannot write '" + path + "': " + std::strerror(errno));
    const int64_t header[3] = {vocab, n_ctx, chunks};
    bool ok = std::fwrite(kBaseMagic, 1, 8, f_) == 8 && std::fwrite(header, sizeof header, 1, f_) == 1;
    ok = ok && std::fwrite(tokens.data(), sizeof(int32_t), static_cast<size_t>(chunks * n_ctx), f_) == static_cast<size_t>(chunks * n_ctx);
    return ok ? Status::ok() : Status::error("cannot write '" + path + "'");
  }

  Status open(const std::string& path, int64_t vocab, int64_t n_ctx, int64_t chunks, const std::vector<int32_t>& tokens) {
    path_ = path;
    f_ = std::fopen(path.c_str(), "rb");
    if (f_ == nullptr) return Status::error("cannot open '" + path + "': " + std::strerror(errno));
    char magic[8];
    int64_t header[3];
    if (std::fread(magic, 1, 8, f_) != 8 || std::memcmp(magic, kBaseMagic, 8) != 0 || std::fread(header, sizeof header, 1, f_) != 1) {
      return Status::error("'" + path + "' is not a base-logits file (frugal eval --save-base writes them)");
    }
    if (header[0] != vocab) {
      return Status::error("'" + path + "' was saved for a vocabulary of " + std::to_string(header[0]) + " tokens, the model has " +
                           std::to_string(vocab));
    }
    if (header[1] != n_ctx) {
      return Status::error("'" + path + "' was saved with -c " + std::to_string(header[1]) + ", not -c " + std::to_string(n_ctx));
    }
    if (header[2] < chunks) {
      return Status::error("'" + path + "' holds " + std::to_string(header[2]) + " chunks, " + std::to_string(chunks) + " are asked for");
    }
    std::vector<int32_t> saved(static_cast<size_t>(header[2] * n_ctx));
    if (std::fread(saved.data(), sizeof(int32_t), saved.size(), f_) != saved.size()) return Status::error("'" + path + "' is truncated");
    if (!std::equal(saved.begin(), saved.begin() + chunks * n_ctx, tokens.begin())) {
      return Status::error("'" + path + "' was saved for another text (or a model with another tokenizer)");
    }
    values_.resize(static_cast<size_t>(vocab));
    return Status::ok();
  }

  // Writes the log-probabilities `lp` (and the top token) of one position.
  Status put(const std::vector<double>& lp, int32_t top) {
    double lo = 0;
    for (double v : lp) lo = std::min(lo, v);
    lo = std::max(lo, -1e4);
    BaseRecordHeader h{static_cast<float>(lo), static_cast<float>(-lo / 65535.0), top, 0};
    values_.resize(lp.size());
    for (size_t v = 0; v < lp.size(); ++v) {
      const double q = h.step > 0 ? (std::max(lp[v], lo) - lo) / h.step : 0;
      values_[v] = static_cast<uint16_t>(std::clamp(std::lround(q), 0L, 65535L));
    }
    const bool ok = std::fwrite(&h, sizeof h, 1, f_) == 1 && std::fwrite(values_.data(), 2, values_.size(), f_) == values_.size();
    return ok ? Status::ok() : Status::error("cannot write '" + path_ + "'");
  }

  Status get(std::vector<double>& lp, int64_t* top) {
    BaseRecordHeader h;
    if (std::fread(&h, sizeof h, 1, f_) != 1 || std::fread(values_.data(), 2, values_.size(), f_) != values_.size()) {
      return Status::error("'" + path_ + "' is truncated");
    }
    for (size_t v = 0; v < values_.size(); ++v) lp[v] = h.min_logprob + h.step * values_[v];
    *top = h.top;
    return Status::ok();
  }

  Status finish() {
    FILE* f = f_;
    f_ = nullptr;
    const bool ok = std::fclose(f) == 0 && std::rename(temp_.c_str(), path_.c_str()) == 0;
    if (!ok) std::remove(temp_.c_str());
    unregister_temp_file(temp_);
    return ok ? Status::ok() : Status::error("cannot write '" + path_ + "'");
  }

 private:
  FILE* f_ = nullptr;
  bool writing_ = false;
  std::string path_, temp_;
  std::vector<uint16_t> values_;
};

}  // namespace

Result<DivergenceResult> compare_distributions(Transformer& model, Transformer& base, const std::vector<int32_t>& tokens,
                                               int64_t n_ctx, int64_t max_chunks,
                                               const std::function<void(int64_t, int64_t)>& on_chunk) {
  return compare_distributions(model, &base, tokens, n_ctx, max_chunks, {}, on_chunk);
}

Result<DivergenceResult> compare_distributions(Transformer& model, Transformer* base, const std::vector<int32_t>& tokens,
                                               int64_t n_ctx, int64_t max_chunks, const BaseLogitsOptions& files,
                                               const std::function<void(int64_t, int64_t)>& on_chunk) {
  const bool from_file = !files.load_path.empty();
  if (!from_file && base == nullptr) return Status::error("compare_distributions needs a base model or a base-logits file");
  if (from_file && !files.save_path.empty()) return Status::error("--save-base and --base-logits exclude each other");
  const int64_t vocab = model.model().config().n_vocab;
  if (base != nullptr && base->model().config().n_vocab != vocab) {
    return Status::error("the model and the base have different vocabularies (" + std::to_string(vocab) +
                         " vs " + std::to_string(base->model().config().n_vocab) + " tokens)");
  }
  int64_t total = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (total == 0) return Status::error("the text is shorter than one chunk of " + std::to_string(n_ctx) + " tokens");
  if (max_chunks > 0) total = std::min(total, max_chunks);
  const Tokenizer& tokenizer = (base != nullptr ? base->model() : model.model()).tokenizer();
  const bool add_bos = tokenizer.vocab().add_bos && tokenizer.bos() >= 0;
  BaseFile file;
  if (from_file) FRUGAL_RETURN_IF_ERROR(file.open(files.load_path, vocab, n_ctx, total, tokens));
  if (!files.save_path.empty()) FRUGAL_RETURN_IF_ERROR(file.create(files.save_path, vocab, n_ctx, total, tokens));

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
    FRUGAL_RETURN_IF_ERROR(model.evaluate(chunk.data(), n_ctx));
    if (!from_file) {
      base->truncate(0);
      FRUGAL_RETURN_IF_ERROR(base->evaluate(chunk.data(), n_ctx));
    }
    for (int64_t i = n_ctx / 2; i < n_ctx - 1; ++i) {
      const float* lm = model.logits(i);
      log_softmax(lm, vocab, lp_model);
      int64_t top_model = 0, top_base = 0;
      if (from_file) {
        FRUGAL_RETURN_IF_ERROR(file.get(lp_base, &top_base));
      } else {
        const float* lb = base->logits(i);
        log_softmax(lb, vocab, lp_base);
        for (int64_t v = 0; v < vocab; ++v) {
          if (lb[v] > lb[top_base]) top_base = v;
        }
        if (!files.save_path.empty()) FRUGAL_RETURN_IF_ERROR(file.put(lp_base, static_cast<int32_t>(top_base)));
      }
      double kld = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        kld += std::exp(lp_base[v]) * (lp_base[v] - lp_model[v]);
        if (lm[v] > lm[top_model]) top_model = v;
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
  if (!files.save_path.empty()) FRUGAL_RETURN_IF_ERROR(file.finish());
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
