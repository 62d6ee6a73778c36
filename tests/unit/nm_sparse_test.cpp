// N:M sparse formats (tensor/nm_sparse.h): names and sizes, the pattern read from pruned data, the
// round trip, the loader-side validation of hostile bytes, the decode kernels of every ISA this CPU
// has against their scalar twin, and the prefill path that expands tiles to Q8_0.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/activation_quant.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/matmul_kernels.h"
#include "kernels/nm_sparse_kernels.h"
#include "support/isa_scope.h"
#include "tensor/nm_sparse.h"

namespace frugal {
namespace {

// Random normal rows keeping N random positions of every M consecutive weights.
std::vector<float> nm_rows(int64_t rows, int64_t cols, int n, int m, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(rows * cols), 0.0f);
  std::vector<int> idx(static_cast<size_t>(m));
  for (int64_t g = 0; g < rows * cols; g += m) {
    for (int j = 0; j < m; ++j) idx[j] = j;
    std::shuffle(idx.begin(), idx.end(), rng);
    for (int j = 0; j < n; ++j) v[g + idx[j]] = normal(rng);
  }
  return v;
}

std::vector<uint8_t> encode(const TypeTraits& t, const std::vector<float>& v, int64_t rows, int64_t cols) {
  std::vector<uint8_t> out(static_cast<size_t>(rows) * row_bytes(t, cols));
  for (int64_t r = 0; r < rows; ++r) t.quantize_row(v.data() + r * cols, out.data() + r * row_bytes(t, cols), cols);
  return out;
}

TEST(NmSparse, TypesNamesAndBitsPerWeight) {
  for (int bits : {8, 4}) {
    for (int n : {2, 4}) {
      const DType t = *nm_type(bits, n, 2 * n);
      const NmPattern p = nm_pattern(t);
      EXPECT_EQ(p.bits, bits);
      EXPECT_EQ(p.n, n);
      EXPECT_EQ(p.m, 2 * n);
      const TypeTraits& traits = type_traits(t);
      EXPECT_EQ(std::string(traits.name), "nm_q" + std::to_string(bits) + "_" + std::to_string(n) + "of" + std::to_string(2 * n));
      EXPECT_EQ(ggml_type_name(static_cast<uint32_t>(t)), traits.name);
      EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(traits.block_bytes) / 64.0, bits == 8 ? 5.25 : 3.25);
    }
  }
  EXPECT_FALSE(nm_type(8, 1, 4).has_value());
  EXPECT_FALSE(nm_type(6, 2, 4).has_value());
  EXPECT_EQ(find_type_traits(kNmTypeBase | 8 << 8 | 1 << 4 | 4), nullptr);
  EXPECT_FALSE(is_nm_sparse(DType::Q8_0));
}

TEST(NmSparse, PatternFromDataAndRoundTrip) {
  std::mt19937 rng(7);
  const int64_t rows = 5, cols = 256;
  for (int bits : {8, 4}) {
    for (int n : {2, 4}) {
      const std::vector<float> v = nm_rows(rows, cols, n, 2 * n, rng);
      std::string why;
      const auto type = nm_type_for(bits, v.data(), rows, cols, &why);
      ASSERT_TRUE(type.has_value()) << why;
      // 2:4 data is also 4:8; 4:8 data (random positions) is not 2:4.
      EXPECT_EQ(nm_pattern(*type).n, n);
      const TypeTraits& t = type_traits(*type);
      const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
      ASSERT_TRUE(t.validate(t, bytes.data(), rows, cols, &why)) << why;
      std::vector<float> back(static_cast<size_t>(cols));
      const float step = bits == 8 ? 127.0f : 7.0f;
      for (int64_t r = 0; r < rows; ++r) {
        t.dequantize_row(bytes.data() + r * row_bytes(t, cols), back.data(), cols);
        for (int64_t b = 0; b < cols / 64; ++b) {
          float amax = 0.0f;
          for (int j = 0; j < 64; ++j) amax = std::max(amax, std::fabs(v[r * cols + b * 64 + j]));
          for (int j = 0; j < 64; ++j) {
            const float x = v[r * cols + b * 64 + j], y = back[b * 64 + j];
            if (x == 0.0f) {
              ASSERT_EQ(y, 0.0f);
            }
            ASSERT_NEAR(y, x, amax / step * 0.51f + 1e-3f * amax) << bits << " " << n;
          }
        }
      }
    }
  }
  // Dense data is neither.
  std::normal_distribution<float> normal;
  std::vector<float> dense(static_cast<size_t>(rows * cols));
  for (auto& x : dense) x = normal(rng);
  std::string why;
  EXPECT_FALSE(nm_type_for(8, dense.data(), rows, cols, &why).has_value());
  EXPECT_NE(why.find("not 2:4 or 4:8 sparse"), std::string::npos) << why;
  // The reference quantizer still stores any row: the 2 largest of every 4.
  const TypeTraits& t = type_traits(*nm_type(8, 2, 4));
  std::vector<float> row(64);
  for (int j = 0; j < 64; ++j) row[j] = static_cast<float>(j % 4 + 1) * (j % 8 < 4 ? 1.0f : -1.0f);
  std::vector<uint8_t> bytes(row_bytes(t, 64));
  t.quantize_row(row.data(), bytes.data(), 64);
  std::vector<float> back(64);
  t.dequantize_row(bytes.data(), back.data(), 64);
  for (int j = 0; j < 64; ++j) {
    if (j % 4 >= 2) {
      EXPECT_NEAR(back[j], row[j], 0.02f) << j;
    } else {
      EXPECT_EQ(back[j], 0.0f) << j;
    }
  }
}

TEST(NmSparse, ValidationRefusesHostileBytes) {
  std::mt19937 rng(3);
  const int64_t rows = 3, cols = 128;
  for (int bits : {8, 4}) {
    const std::vector<float> v = nm_rows(rows, cols, 2, 4, rng);
    const TypeTraits& t = type_traits(*nm_type(bits, 2, 4));
    const std::vector<uint8_t> good = encode(t, v, rows, cols);
    const size_t rb = row_bytes(t, cols);
    std::string why;
    ASSERT_TRUE(t.validate(t, good.data(), rows, cols, &why)) << why;

    std::vector<uint8_t> bad = good;
    bad[2 * rb + 8] |= 0x0f;  // row 2, block 1, group 0: 4 of 4 bits
    EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
    EXPECT_NE(why.find("row 2 block 1 has more than 2 mask bits set in the group of 4 at 0"), std::string::npos) << why;

    bad = good;
    bad[20] = bits == 8 ? 0 : static_cast<uint8_t>((bad[20] & 0xf0) | 8);  // row 0 block 0's first value: the code of 0
    EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
    EXPECT_NE(why.find("row 0 block 0 stores a code"), std::string::npos) << why;

    // Drop row 1 block 0's last mask bit: its value becomes a non-zero code past the values.
    bad = good;
    uint64_t m;
    std::memcpy(&m, bad.data() + rb, 8);
    m &= ~(uint64_t{1} << (63 - std::countl_zero(m)));
    std::memcpy(bad.data() + rb, &m, 8);
    EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
    EXPECT_NE(why.find("row 1 block 0 has a non-zero code past its"), std::string::npos) << why;
  }
}

struct Acts {
  std::vector<uint8_t> storage;
  kernels::QuantizedActivations q;
};

Acts make_acts(int64_t cols, std::mt19937& rng) {
  Acts a;
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(cols));
  for (auto& e : x) e = normal(rng);
  a.storage.resize(kernels::activation_bytes(kernels::ActivationFormat::kQ8Block32, cols, 1) + 64);
  uint8_t* data = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(a.storage.data()) + 63) & ~uintptr_t{63});
  a.q = kernels::make_activation_view(kernels::ActivationFormat::kQ8Block32, cols, 1, data);
  kernels::quantize_activations_reference(x.data(), cols, 0, a.q.n_groups(), a.q);
  return a;
}

TEST(NmSparseKernels, EveryIsaMatchesTheScalarTwinAndPrefillExpands) {
  std::mt19937 rng(11);
  const int64_t rows = 37;
  for (const int64_t cols : {int64_t{640}, int64_t{1344}})
  for (int bits : {8, 4})
  for (int n : {2, 4}) {
    const std::vector<float> v = nm_rows(rows, cols, n, 2 * n, rng);
    std::string why;
    const TypeTraits& t = type_traits(*nm_type_for(bits, v.data(), rows, cols, &why));
    const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
    const WeightMatrix w{&t, bytes.data(), rows, cols, row_bytes(t, cols)};
    Acts a = make_acts(cols, rng);
    std::vector<float> twin(rows);
    kernels::nm_rows_reference(w, 0, rows, a.q, twin.data(), rows, nullptr);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(w.row(r), row.data(), cols);
      double want = 0.0;
      for (int64_t k = 0; k < cols; ++k) want += static_cast<double>(row[k]) * a.q.code(0, k) * a.q.value(0, kernels::ActivationArray::kD32, k / 32);
      EXPECT_NEAR(twin[r], want, 1e-4 * (1.0 + std::fabs(want))) << r;
    }
    for (Isa isa : testing::supported_isas()) {
      const kernels::KernelTable& table = kernels::kernel_table(isa);
      ASSERT_NE(table.quant_rows[kernels::kKernelNmSparse], nullptr) << isa_name(isa);
      std::vector<float> y(rows, -1.0f);
      table.quant_rows[kernels::kKernelNmSparse](w, 0, 5, a.q, y.data(), rows, nullptr);
      table.quant_rows[kernels::kKernelNmSparse](w, 5, rows, a.q, y.data(), rows, nullptr);
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_NEAR(y[r], twin[r], 1e-4f * (1.0f + std::fabs(twin[r]))) << isa_name(isa) << " " << t.name << " row " << r;
    }
    // The Q8_0 tiles of the prefill path hold the same values; the SIMD expansion writes the twin's bytes.
    std::vector<uint8_t> tile(static_cast<size_t>(rows * cols / 32 * 34));
    kernels::nm_to_q8_0(w, 0, rows, tile.data());
    std::vector<float> b(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(w.row(r), row.data(), cols);
      type_traits(DType::Q8_0).dequantize_row(tile.data() + r * (cols / 32 * 34), b.data(), cols);
      ASSERT_EQ(row, b) << r;
    }
    if (kernels::sparse_q8_avx512_supported()) {
      std::vector<uint8_t> fast(tile.size());
      kernels::nm_to_q8_0_avx512(w, 0, rows, fast.data());
      EXPECT_EQ(fast, tile) << t.name;
    }
  }
  if (best_supported_isa() == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported()) {
    EXPECT_EQ(kernels::kernel_table(Isa::kAvx512Vnni).quant_rows[kernels::kKernelNmSparse], &kernels::nm_rows_avx512);
  }
}

TEST(NmSparseKernels, MatmulDecodeAndPrefillMatchTheDenseProduct) {
  std::mt19937 rng(5);
  const int64_t rows = 70, cols = 256;
  ThreadPool pool(2);
  for (int bits : {8, 4}) {
    const std::vector<float> v = nm_rows(rows, cols, 2, 4, rng);
    const TypeTraits& t = type_traits(*nm_type(bits, 2, 4));
    const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
    const WeightMatrix w{&t, bytes.data(), rows, cols, row_bytes(t, cols)};
    for (int64_t n_tokens : {1, 17}) {
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<size_t>(cols * n_tokens));
      for (auto& e : x) e = normal(rng);
      std::vector<float> want(static_cast<size_t>(rows * n_tokens));
      matmul_reference(w, x.data(), cols, n_tokens, want.data(), rows);
      for (Isa isa : testing::supported_isas()) {
        testing::ScopedIsa scope(isa);
        std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, pool.size()));
        std::vector<float> y(static_cast<size_t>(rows * n_tokens));
        matmul(w, x.data(), cols, n_tokens, y.data(), rows, workspace.data(), workspace.size(), pool);
        double err = 0.0, norm = 0.0;
        for (size_t i = 0; i < y.size(); ++i) {
          err += (y[i] - want[i]) * (y[i] - want[i]);
          norm += want[i] * want[i];
        }
        EXPECT_LT(std::sqrt(err / norm), 0.02) << isa_name(isa) << " " << t.name << " tokens " << n_tokens;
      }
    }
  }
}

}  // namespace
}  // namespace frugal
