// AMX int8 prefill kernels (kernels/matmul_amx.cpp) and their detection (kernels/cpu_features):
// the AMX rows must have the avx512vnni kernel's bits exactly (and so the scalar twin's values to
// float rounding), through the kernel entry and the public matmul; FRUGAL_AMX=off and
// set_amx_enabled(false) must turn AMX off. Skipped where the host does not allow AMX.
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/matmul_kernels.h"
#include "support/isa_scope.h"

extern char** environ;

namespace frugal {
namespace {

using kernels::ActivationFormat;
using testing::ScopedIsa;

class ScopedAmx {
 public:
  explicit ScopedAmx(bool enabled) { set_amx_enabled(enabled); }
  // Back to the process default (on unless FRUGAL_AMX=off).
  ~ScopedAmx() {
    const char* env = std::getenv("FRUGAL_AMX");
    set_amx_enabled(env == nullptr || (std::strcmp(env, "off") != 0 && std::strcmp(env, "0") != 0));
  }
  ScopedAmx(const ScopedAmx&) = delete;
  ScopedAmx& operator=(const ScopedAmx&) = delete;
};

std::vector<uint8_t> random_weights(const TypeTraits& t, int64_t rows, int64_t cols, bool raw, std::mt19937& rng) {
  const size_t rb = row_bytes(t, cols);
  std::vector<uint8_t> out(rows * rb);
  std::normal_distribution<float> normal;
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = normal(rng) * 0.05f;
    t.quantize_row(row.data(), out.data() + r * rb, cols);
  }
  if (raw) {  // every code pattern: random bytes everywhere but the quantizer's scale fields
    std::uniform_int_distribution<int> byte(0, 255);
    const std::vector<uint8_t> scales = out;
    for (auto& b : out) b = static_cast<uint8_t>(byte(rng));
    // Keep the first two bytes (the fp16 d of 32-element types) and the last 4 (K-quants' d) sane.
    const size_t n_blocks = out.size() / t.block_bytes;
    for (size_t b = 0; b < n_blocks; ++b) {
      uint8_t* blk = out.data() + b * t.block_bytes;
      const uint8_t* good = scales.data() + b * t.block_bytes;
      if (t.block_size == 32) {
        std::memcpy(blk, good, t.type == DType::Q4_1 || t.type == DType::Q5_1 ? 4 : 2);
      } else if (t.type == DType::Q6_K) {
        std::memcpy(blk + t.block_bytes - 2, good + t.block_bytes - 2, 2);
      } else if (t.type == DType::Q3_K) {
        std::memcpy(blk + t.block_bytes - 2, good + t.block_bytes - 2, 2);
      } else if (t.type == DType::Q2_K) {
        std::memcpy(blk + t.block_bytes - 4, good + t.block_bytes - 4, 4);
      } else {  // Q4_K / Q5_K: d and dmin first
        std::memcpy(blk, good, 4);
      }
    }
  }
  return out;
}

std::vector<float> random_activations(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(n_tokens * cols);
  for (auto& v : x) v = normal(rng);
  for (int64_t t = 0; t < n_tokens; ++t) {
    x[t * cols + (7 * t + 3) % cols] *= 25.0f;
    const int64_t zero_block = (t % (cols / 32)) * 32;
    for (int64_t k = 0; k < 32; ++k) x[t * cols + zero_block + k] = 0.0f;
  }
  return x;
}

TEST(AmxDetection, EnableSwitchAndIsaGate) {
  std::printf("[ info ] amx: %s\n", amx_status());
  if (!amx_supported()) {
    EXPECT_FALSE(amx_active());
    EXPECT_NE(std::string(amx_unavailable_reason()), "");
    EXPECT_FALSE(set_amx_enabled(true));
    GTEST_SKIP() << "AMX unavailable on this host: " << amx_unavailable_reason();
  }
  EXPECT_STREQ(amx_unavailable_reason(), "");
  ScopedAmx scope(true);
  {
    ScopedIsa isa(Isa::kAvx512Vnni);
    EXPECT_TRUE(amx_active());
    EXPECT_STREQ(amx_status(), "on");
    EXPECT_FALSE(set_amx_enabled(false));
    EXPECT_STREQ(amx_status(), "off");
    EXPECT_TRUE(set_amx_enabled(true));
  }
  {
    ScopedIsa isa(Isa::kAvx512);  // the AMX kernels reproduce the VNNI table only
    EXPECT_FALSE(amx_active());
  }
}

// The child half of EnvironmentTurnsAmxOff: run in a new process with FRUGAL_AMX=off.
TEST(AmxDetection, ChildSeesEnvironment) {
  const char* child = std::getenv("FRUGAL_AMX_TEST_CHILD");
  if (child == nullptr) GTEST_SKIP() << "only run as the child of EnvironmentTurnsAmxOff";
  EXPECT_FALSE(amx_active());
  if (amx_supported()) {
    EXPECT_STREQ(amx_status(), "off (FRUGAL_AMX=off)");
  }
}

TEST(AmxDetection, EnvironmentTurnsAmxOff) {
  if (std::getenv("FRUGAL_AMX_TEST_CHILD") != nullptr) GTEST_SKIP() << "child";
  std::vector<std::string> env_strings = {"FRUGAL_AMX=off", "FRUGAL_AMX_TEST_CHILD=1"};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "FRUGAL_AMX", 10) != 0) env_strings.push_back(*e);
  }
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = "--gtest_filter=AmxDetection.ChildSeesEnvironment";
  char* argv[] = {exe.data(), filter.data(), nullptr};
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child with FRUGAL_AMX=off saw AMX on";
}

class AmxTwins : public ::testing::TestWithParam<DType> {};

// The AMX rows against the VNNI kernel (same bits) and the scalar twin (float rounding), on
// partial row tiles and token counts that leave a lone group and a partial group.
TEST_P(AmxTwins, BitIdenticalToVnniKernel) {
  if (!amx_supported()) GTEST_SKIP() << "AMX unavailable: " << amx_unavailable_reason();
  const TypeTraits& t = type_traits(GetParam());
  const int index = kernels::kernel_type_index(t.type);
  const kernels::QuantRowsFn amx = kernels::amx_quant_rows(index);
  if (!kernels::amx_preferred(index)) {
    // The folded 16-element K-quants have no AMX kernel (matmul_amx.cpp).
    ASSERT_EQ(amx, nullptr) << t.name;
    GTEST_SKIP() << t.name << ": no AMX kernel (the driver keeps VNNI)";
  }
  ASSERT_NE(amx, nullptr);
  const kernels::KernelTable& vnni = kernels::kernel_table(Isa::kAvx512Vnni);
  const ActivationFormat format = kernels::activation_format_for(t.type);
  std::mt19937 rng(71);
  for (int64_t cols : {512, 576, 1536, 2048}) {
    if (cols % t.block_size != 0) continue;
    const int64_t rows = 37;
    for (bool raw : {false, true}) {
      const std::vector<uint8_t> w = random_weights(t, rows, cols, raw, rng);
      const WeightMatrix m{&t, w.data(), rows, cols, row_bytes(t, cols)};
      std::vector<uint8_t> scratch(vnni.scratch_bytes(cols) + 64);
      uint8_t* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t{63});
      for (int64_t n_tokens : {2, 9, 16, 23, 40, 71}) {
        const std::vector<float> x = random_activations(n_tokens, cols, rng);
        std::vector<uint8_t> bytes(kernels::activation_bytes(format, cols, n_tokens));
        const kernels::QuantizedActivations a = kernels::make_activation_view(format, cols, n_tokens, bytes.data());
        vnni.quantize(x.data(), cols, 0, a.n_groups(), a);
        // The AMX kernels read groups of 16 tokens (kAmxTokenGroup), quantized by the same code.
        std::vector<uint8_t> bytes16(kernels::activation_bytes(format, cols, n_tokens, kernels::kAmxTokenGroup));
        const kernels::QuantizedActivations a16 =
            kernels::make_activation_view(format, cols, n_tokens, kernels::kAmxTokenGroup, bytes16.data());
        vnni.quantize(x.data(), cols, 0, a16.n_groups(), a16);
        std::vector<float> expected(n_tokens * rows, -1.0f), twin(n_tokens * rows, -1.0f), y(n_tokens * rows, -1.0f);
        vnni.quant_rows[index](m, 0, rows, a, expected.data(), rows, aligned);
        kernels::quant_rows_reference(m, 0, rows, a, twin.data(), rows, nullptr);
        amx(m, 0, 21, a16, y.data(), rows, aligned);  // a split that is not a multiple of the tile
        amx(m, 21, rows, a16, y.data(), rows, aligned);
        int64_t differing = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          if (std::memcmp(&y[i], &expected[i], sizeof(float)) != 0 && ++differing <= 3) {
            ADD_FAILURE() << t.name << " cols " << cols << " raw " << raw << " tokens " << n_tokens << " row "
                          << i % rows << " token " << i / rows << ": amx " << y[i] << " vnni " << expected[i];
          }
          ASSERT_NEAR(y[i], twin[i], 1e-4 * (1.0 + std::fabs(twin[i]))) << t.name << " i " << i;
        }
        ASSERT_EQ(differing, 0) << t.name << " cols " << cols << " tokens " << n_tokens;
      }
    }
  }
}

// Through the public matmul (the driver picks AMX from kAmxMinTokens tokens): AMX on and off give
// the same bits, on 1 and 2 threads, and so does each token multiplied alone.
TEST_P(AmxTwins, MatmulSameBitsWithAndWithoutAmx) {
  if (!amx_supported()) GTEST_SKIP() << "AMX unavailable: " << amx_unavailable_reason();
  const TypeTraits& t = type_traits(GetParam());
  ScopedIsa isa(Isa::kAvx512Vnni);
  std::mt19937 rng(5);
  const int64_t cols = kernels::kAmxMinCols, rows = 70, n_tokens = kernels::kAmxMinTokens + 9;
  if (!kernels::amx_preferred(kernels::kernel_type_index(t.type))) GTEST_SKIP() << t.name << ": the driver keeps VNNI";
  const std::vector<uint8_t> w = random_weights(t, rows, cols, false, rng);
  const WeightMatrix m{&t, w.data(), rows, cols, row_bytes(t, cols)};
  const std::vector<float> x = random_activations(n_tokens, cols, rng);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, threads));
    std::vector<float> on(n_tokens * rows, -3.0f), off(n_tokens * rows, -5.0f);
    {
      ScopedAmx amx(true);
      ASSERT_TRUE(amx_active());
      matmul(m, x.data(), cols, n_tokens, on.data(), rows, workspace.data(), workspace.size(), pool);
    }
    {
      ScopedAmx amx(false);
      matmul(m, x.data(), cols, n_tokens, off.data(), rows, workspace.data(), workspace.size(), pool);
    }
    EXPECT_EQ(std::memcmp(on.data(), off.data(), on.size() * sizeof(float)), 0) << t.name << " threads " << threads;
    // Batch invariance with AMX on: each token alone (the decode path) gives the batched row's bits.
    std::vector<float> alone(rows);
    for (int64_t tk = 0; tk < n_tokens; tk += 7) {
      matmul(m, x.data() + tk * cols, cols, 1, alone.data(), rows, workspace.data(), workspace.size(), pool);
      ASSERT_EQ(std::memcmp(alone.data(), on.data() + tk * rows, rows * sizeof(float)), 0) << t.name << " token " << tk;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, AmxTwins,
                         ::testing::Values(DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K,
                                           DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K),
                         [](const auto& info) { return std::string(type_traits(info.param).name); });

}  // namespace
}  // namespace frugal
