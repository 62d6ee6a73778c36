// run_benchmark: like llama-bench, prompts are random token ids (speed does not depend on the
// text) and each repetition starts from an empty KV cache.
#include "runtime/benchmark.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "base/timer.h"
#include "model/transformer.h"
#include "runtime/sampler.h"

namespace frugal {
namespace {

void summarize(BenchmarkTest& t, int64_t tokens) {
  const double n = static_cast<double>(t.samples_ns.size());
  for (double ns : t.samples_ns) t.samples_ts.push_back(1e9 * static_cast<double>(tokens) / ns);
  auto mean = [n](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / n;
  };
  auto stddev = [n](const std::vector<double>& v, double m) {
    if (n < 2) return 0.0;
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / (n - 1));
  };
  t.avg_ns = mean(t.samples_ns);
  t.stddev_ns = stddev(t.samples_ns, t.avg_ns);
  t.avg_ts = mean(t.samples_ts);
  t.stddev_ts = stddev(t.samples_ts, t.avg_ts);
}

}  // namespace

double measure_copy_bandwidth() {
  constexpr size_t kBytes = size_t{256} << 20;
  std::vector<char> source(kBytes, 1), target(kBytes, 0);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    Timer timer;
    std::memcpy(target.data(), source.data(), kBytes);
    best = std::max(best, 2.0 * kBytes / timer.seconds());
    source[i] = target[kBytes - 1 - i];  // keep the copies observable
  }
  return best;
}

int64_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

Result<BenchmarkReport> run_benchmark(const std::shared_ptr<const Model>& model, const BenchmarkOptions& o) {
  if (o.n_prompt < 0 || o.n_gen < 0 || (o.n_prompt == 0 && o.n_gen == 0)) return Status::error("nothing to benchmark");
  if (o.repetitions < 1) return Status::error("repetitions must be at least 1");
  TransformerOptions options;
  if (o.n_depth < 0) return Status::error("depth must not be negative");
  options.n_ctx = std::max<int64_t>(16, o.n_depth + std::max(o.n_prompt, o.n_gen + 1));
  options.n_batch = std::max<int64_t>(1, std::min<int64_t>(512, std::max(o.n_prompt, o.n_depth)));
  options.n_threads = o.n_threads;
  options.cache_type_k = o.cache_type_k;
  options.cache_type_v = o.cache_type_v;
  FRUGAL_RETURN_IF_ERROR(check_transformer_options(model->config(), options));
  Transformer transformer(model, options);
  const int32_t n_vocab = static_cast<int32_t>(model->config().n_vocab);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> random_token(0, n_vocab - 1);
  SamplerOptions greedy;
  greedy.temperature = 0;
  Sampler sampler(greedy, n_vocab);
  BenchmarkReport report;
  report.kv_bytes_per_token = transformer.kv_bytes_per_token();
  report.n_ctx = options.n_ctx;
  // The depth's tokens are evaluated once; every repetition then rewinds to them (llama-bench -d).
  const std::string at_depth = o.n_depth > 0 ? " @ d" + std::to_string(o.n_depth) : "";
  if (o.n_depth > 0) {
    std::vector<int32_t> context(o.n_depth);
    for (auto& t : context) t = random_token(rng);
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(context.data(), o.n_depth));
  }

  if (o.n_prompt > 0) {
    BenchmarkTest test;
    test.name = "pp" + std::to_string(o.n_prompt) + at_depth;
    test.n_prompt = o.n_prompt;
    std::vector<int32_t> prompt(o.n_prompt);
    double ttft_total = 0;
    for (int rep = -1; rep < o.repetitions; ++rep) {  // rep -1 is the warm-up
      for (auto& t : prompt) t = random_token(rng);
      transformer.truncate(o.n_depth);
      Timer timer;
      FRUGAL_RETURN_IF_ERROR(transformer.evaluate(prompt.data(), o.n_prompt));
      const double prompt_seconds = timer.seconds();
      sampler.sample(transformer.last_logits());
      const double first_token_seconds = timer.seconds();
      if (rep >= 0) {
        test.samples_ns.push_back(prompt_seconds * 1e9);
        ttft_total += first_token_seconds * 1e3;
      }
    }
    summarize(test, o.n_prompt);
    test.ttft_ms = ttft_total / o.repetitions;
    report.tests.push_back(std::move(test));
  }
  if (o.n_gen > 0) {
    BenchmarkTest test;
    test.name = "tg" + std::to_string(o.n_gen) + at_depth;
    test.n_gen = o.n_gen;
    for (int rep = -1; rep < o.repetitions; ++rep) {
      transformer.truncate(o.n_depth);
      int32_t token = random_token(rng);
      Timer timer;
      for (int64_t i = 0; i < o.n_gen; ++i) {
        FRUGAL_RETURN_IF_ERROR(transformer.evaluate(&token, 1));
        token = sampler.sample(transformer.last_logits());
      }
      if (rep >= 0) test.samples_ns.push_back(timer.seconds() * 1e9);
    }
    summarize(test, o.n_gen);
    report.tests.push_back(std::move(test));
  }
  report.peak_rss_bytes = peak_rss_bytes();
  return report;
}

}  // namespace frugal
