// Microbenchmarks of the matmul kernels at SmolLM2-135M's shapes (576x576, 576->1536, 1536->576,
// 576->49152) and two Llama-7B-sized ones (decode only): decode (1 token, weights streamed from
// memory as in a real forward pass), decode_hot (weights in the cache: the kernel's compute cost)
// and prefill (512 tokens), per weight type and thread count, reporting weight GB/s and GFLOP/s.
// The ISA is the active one (FRUGAL_ISA=scalar|avx2|avx512|avx512vnni forces a lower one); "+amx"
// in the label: AMX int8 tiles run prefill of the integer types (FRUGAL_AMX=off turns them off).
// Also Llama-3.2-1B-sized shapes (2048x2048, 2048->8192, 8192->2048) with prefill.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "tensor/generic_group.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"
#include "tensor/sparse_q8.h"

namespace frugal {
namespace {

struct Shape {
  const char* name;
  int64_t cols;  // input width
  int64_t rows;  // output width
  bool prefill = true;  // also run prefill512 (the 7B-sized ones are decode only)
};

constexpr Shape kShapes[] = {
    {"576x576", 576, 576},
    {"576to1536", 576, 1536},
    {"1536to576", 1536, 576},
    {"576to49152", 576, 49152},
    // Llama-7B-sized matrices, far bigger than the caches: the decode bandwidth test of issue 10
    // (decode only; sparse-q8 against q8_0 and q4_0).
    {"4096x4096", 4096, 4096, false},
    {"4096to11008", 4096, 11008, false},
    // The 1B Llama of issue 14 (width 2048, FFN 8192, vocab 49152): decode at the sizes people
    // run, and prefill, which is compute-bound there (AMX).
    {"2048x2048", 2048, 2048},
    {"2048to8192", 2048, 8192},
    {"8192to2048", 8192, 2048},
    {"2048to49152", 2048, 49152, false},
};

// A frugal generic group type id (tensor/generic_group.h: base | bits << 4 | log2(group / 32)).
constexpr DType fq_type(uint32_t bits, uint32_t log2_group) {
  return static_cast<DType>(kGenericTypeBase | bits << 4 | log2_group);
}

constexpr DType kTypes[] = {DType::Q4_1, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                            DType::Q6_K, DType::F16,  DType::BF16, DType::F32,
                            DType::Q2_K, DType::Q3_K, DType::Q5_K, DType::Q5_0, DType::Q5_1,
                            // sparse-q8 with room for 32 and 19 of 64 weights: the reference
                            // quantizer keeps the largest, so 50% and 70% sparse (tensor/sparse_q8.h).
                            static_cast<DType>(kSparseQ8TypeBase | 32), static_cast<DType>(kSparseQ8TypeBase | 19),
                            // 25% and 37.5% sparse: where sparse-q8 starts to beat q8_0.
                            static_cast<DType>(kSparseQ8TypeBase | 48), static_cast<DType>(kSparseQ8TypeBase | 40),
                            // frugal's fq types (integer kernels, kernels/matmul_fq.h): fq4_g32, fq3_g64,
                            // fq3_g128 (only where 128 divides the columns), fq2_g64
                            fq_type(4, 0), fq_type(3, 1), fq_type(3, 2), fq_type(2, 1),
                            // sparse-q4 (tensor/sparse_q4.h) at 50%, 70% (c20: 68.75%), 37.5% and 25%.
                            static_cast<DType>(kSparseQ4TypeBase | 32), static_cast<DType>(kSparseQ4TypeBase | 20),
                            static_cast<DType>(kSparseQ4TypeBase | 40), static_cast<DType>(kSparseQ4TypeBase | 48),
                            // N:M 2:4 (tensor/nm_sparse.h): the reference quantizer keeps 2 of every 4.
                            static_cast<DType>(kNmTypeBase | 8 << 8 | 2 << 4 | 4), static_cast<DType>(kNmTypeBase | 4 << 8 | 2 << 4 | 4),
                            // The break-even sweep (docs/SPARSE_FORMATS.md): sparse-q8 near its byte
                            // break-even with q4_0 (c26, 59% sparse), sparse-q4 near q4_0's (c52, c56).
                            static_cast<DType>(kSparseQ8TypeBase | 26), static_cast<DType>(kSparseQ4TypeBase | 52),
                            static_cast<DType>(kSparseQ4TypeBase | 56)};

// Decode reads each weight once per token from memory: cycling through enough copies that they
// do not fit in the last-level cache gives the same streaming behaviour.
constexpr size_t kStreamBytes = size_t{96} << 20;

struct Fixture {
  std::vector<std::vector<uint8_t>> copies;
  std::vector<WeightMatrix> weights;
  std::vector<float> x, y;
  std::vector<uint8_t> workspace;
  std::unique_ptr<ThreadPool> pool;
};

Fixture make_fixture(DType type, const Shape& shape, int64_t n_tokens, int threads, bool stream) {
  const TypeTraits& t = type_traits(type);
  Fixture f;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  const size_t rb = row_bytes(t, shape.cols);
  std::vector<uint8_t> stored(rb * shape.rows);
  std::vector<float> row(shape.cols);
  for (int64_t r = 0; r < shape.rows; ++r) {
    for (auto& v : row) v = normal(rng);
    t.quantize_row(row.data(), stored.data() + r * rb, shape.cols);
  }
  // FRUGAL_BENCH_STREAM_MB overrides the streamed bytes (the VM may report a last-level cache
  // larger than 96 MB: a server's shared L3).
  const char* env = std::getenv("FRUGAL_BENCH_STREAM_MB");
  const size_t stream_bytes = env != nullptr && std::atol(env) > 0 ? static_cast<size_t>(std::atol(env)) << 20 : kStreamBytes;
  const size_t n_copies = stream ? std::max<size_t>(1, stream_bytes / stored.size() + 1) : 1;
  for (size_t i = 0; i < n_copies; ++i) f.copies.push_back(stored);
  for (auto& c : f.copies) f.weights.push_back(WeightMatrix{&t, c.data(), shape.rows, shape.cols, rb});
  f.x.resize(n_tokens * shape.cols);
  for (auto& v : f.x) v = normal(rng);
  f.y.resize(n_tokens * shape.rows);
  f.workspace.resize(matmul_workspace_bytes(shape.cols, n_tokens, threads));
  f.pool = std::make_unique<ThreadPool>(threads);
  return f;
}

// n_tokens 0 means decode with the weights left in the cache ("decode_hot"): the kernel's compute
// cost alone, to tell a compute-bound decode kernel from a memory-bound one.
void run_matmul(benchmark::State& state, DType type, Shape shape, int64_t n_tokens) {
  const int threads = static_cast<int>(state.range(0));
  const bool stream = n_tokens == 1;
  n_tokens = std::max<int64_t>(n_tokens, 1);
  Fixture f = make_fixture(type, shape, n_tokens, threads, stream);
  size_t i = 0;
  for (auto _ : state) {
    const WeightMatrix& w = f.weights[i++ % f.weights.size()];
    matmul(w, f.x.data(), shape.cols, n_tokens, f.y.data(), shape.rows, f.workspace.data(), f.workspace.size(),
           *f.pool);
    benchmark::DoNotOptimize(f.y.data());
  }
  const double bytes = static_cast<double>(f.weights[0].row_bytes * shape.rows);
  const double flops = 2.0 * static_cast<double>(shape.rows * shape.cols) * static_cast<double>(n_tokens);
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(active_isa_name()) + (amx_active() ? "+amx" : ""));
}

// The read bound of decode: the same bytes as a 16M-weight Q4_0 matrix (2048to8192), cycled
// through the same number of copies as the decode benchmarks, summed with 64-bit loads split
// between the threads as matmul splits rows. decode GB/s over this is the fraction of the bound.
void run_read(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const size_t bytes = row_bytes(type_traits(DType::Q4_0), 2048) * 8192;
  const char* env = std::getenv("FRUGAL_BENCH_STREAM_MB");
  const size_t stream_bytes = env != nullptr && std::atol(env) > 0 ? static_cast<size_t>(std::atol(env)) << 20 : kStreamBytes;
  const size_t n_copies = std::max<size_t>(1, stream_bytes / bytes + 1);
  std::vector<std::vector<uint64_t>> copies(n_copies, std::vector<uint64_t>(bytes / 8, 1));
  ThreadPool pool(threads);
  std::vector<uint64_t> sums(threads * 8);
  size_t i = 0;
  for (auto _ : state) {
    const std::vector<uint64_t>& c = copies[i++ % n_copies];
    pool.run([&](int index, int count) {
      const size_t n = c.size(), begin = n * index / count, end = n * (index + 1) / count;
      uint64_t sum = 0;
      for (size_t k = begin; k < end; ++k) sum += c[k];
      sums[index * 8] += sum;
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  benchmark::RegisterBenchmark("memory/read/9MB", run_read)
      ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
  for (DType type : kTypes) {
    const TypeTraits& t = type_traits(type);
    for (const Shape& shape : kShapes) {
      if (shape.cols % t.block_size != 0) continue;  // K-quants need columns in multiples of 256
      for (const auto& [mode, tokens] : {std::pair{"decode", int64_t{1}}, std::pair{"prefill512", int64_t{512}},
                                        std::pair{"decode_hot", int64_t{0}}}) {
        if (tokens != 1 && !shape.prefill) continue;
        const std::string name = std::string("matmul/") + t.name + "/" + shape.name + "/" + mode;
        auto* b = benchmark::RegisterBenchmark(name.c_str(), run_matmul, type, shape, tokens);
        b->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
        if (tokens > 1 && shape.rows > 4096) b->MinTime(1.0);
      }
    }
  }
}

}  // namespace
}  // namespace frugal

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("frugal_isa", frugal::active_isa_name());
  benchmark::AddCustomContext("frugal_amx", frugal::amx_status());
  frugal::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
