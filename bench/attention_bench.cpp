// Microbenchmark of decode attention over the KV cache per stored type (f16, q8_0, q4_0): one
// query head of SmolLM2-135M (head_dim 64, KV rows of 3 heads) against 512..8192 cached positions,
// reporting cached keys per second. This is the kernel issue 12's "q8_0 decode >= f16 at 4k
// context" is about; the ISA is the active one (FRUGAL_ISA=scalar|avx2 forces a lower one).
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/ops.h"

namespace frugal {
namespace {

constexpr int64_t kHeadDim = 64, kKvHeads = 3;

int64_t row_bytes(KvType type, int64_t n) { return type == KvType::kF16 ? 2 * n : type == KvType::kQ8_0 ? n / 32 * 34 : n / 32 * 18; }

// Rows of plausible bits: f16 values of magnitude 2^-4..2^0, q8_0/q4_0 blocks with d = 0.01 and
// random codes (the kernels' cost does not depend on the values).
std::vector<uint8_t> random_rows(KvType type, int64_t positions, std::mt19937& rng) {
  const int64_t n = kHeadDim * kKvHeads, rb = row_bytes(type, n);
  std::vector<uint8_t> out(positions * rb);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : out) b = static_cast<uint8_t>(byte(rng));
  for (int64_t p = 0; p < positions; ++p) {
    uint8_t* row = out.data() + p * rb;
    if (type == KvType::kF16) {
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = static_cast<uint16_t>((byte(rng) & 1) << 15 | (11 + byte(rng) % 4) << 10 | byte(rng) << 2);
        std::memcpy(row + 2 * i, &h, 2);
      }
    } else {
      const int64_t block = type == KvType::kQ8_0 ? 34 : 18;
      const uint16_t d = 0x211F;  // 0.01 in fp16
      for (int64_t b = 0; b < n / 32; ++b) {
        std::memcpy(row + b * block, &d, 2);
        if (type == KvType::kQ8_0) {
          for (int i = 0; i < 32; ++i) row[b * block + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(byte(rng) % 255 - 127));
        }
      }
    }
  }
  return out;
}

void BM_Attend(benchmark::State& state) {
  const auto type = static_cast<KvType>(state.range(0));
  const int64_t positions = state.range(1);
  std::mt19937 rng(3);
  const std::vector<uint8_t> rows = random_rows(type, positions, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(kHeadDim), out(kHeadDim);
  for (auto& x : q) x = normal(rng);
  const KvRows kv{rows.data(), row_bytes(type, kHeadDim * kKvHeads), type};
  for (auto _ : state) {
    attend_one_head(q.data(), kv, kv, 0, positions - 1, kHeadDim, 0.125f, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["keys/s"] = benchmark::Counter(static_cast<double>(positions), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(type == KvType::kF16 ? "f16 " : type == KvType::kQ8_0 ? "q8_0 " : "q4_0 ") + active_isa_name());
}

BENCHMARK(BM_Attend)->ArgsProduct({{0, 1, 2}, {512, 4096, 8192}})->ArgNames({"type", "positions"});

}  // namespace
}  // namespace frugal

BENCHMARK_MAIN();
