// Speed measurement in llama-bench's terms: pp (prompt processing: one batch of n_prompt tokens
// into an empty cache) and tg (text generation: n_gen tokens decoded one at a time), repeated,
// with mean and standard deviation of tokens/s, plus time to first token and peak RSS.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"
#include "model/model.h"

namespace frugal {

struct BenchmarkOptions {
  int64_t n_prompt = 512;
  int64_t n_gen = 128;
  int n_threads = 2;
  int repetitions = 5;
  uint64_t seed = 1234;
  int64_t n_depth = 0;  // tokens already in the cache before each test (llama-bench's -d)
  KvType cache_type_k = KvType::kF16;
  KvType cache_type_v = KvType::kF16;
};

struct BenchmarkTest {
  std::string name;  // "pp512", "tg128"
  int64_t n_prompt = 0;
  int64_t n_gen = 0;
  std::vector<double> samples_ns;
  std::vector<double> samples_ts;
  double avg_ns = 0, stddev_ns = 0, avg_ts = 0, stddev_ts = 0;
  // pp tests: time from handing over the prompt to having the first generated token (ms).
  double ttft_ms = 0;
};

struct BenchmarkReport {
  std::vector<BenchmarkTest> tests;
  int64_t peak_rss_bytes = 0;
  int64_t kv_bytes_per_token = 0;  // keys + values of all layers, in the cache's types
  int64_t n_ctx = 0;               // positions the benchmark's cache holds
};

// Runs the pp test (if n_prompt > 0) and the tg test (if n_gen > 0), each after one warm-up.
Result<BenchmarkReport> run_benchmark(const std::shared_ptr<const Model>& model, const BenchmarkOptions& options);

// Best-of-several memcpy bandwidth over a buffer far larger than the caches, in bytes/s (bytes
// read + bytes written), the bound decode speed is compared against.
double measure_copy_bandwidth();

// Peak resident set size of this process so far.
int64_t peak_rss_bytes();

}  // namespace frugal
