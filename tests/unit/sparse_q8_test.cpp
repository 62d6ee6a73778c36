// sparse-q8 (tensor/sparse_q8.h): round trip of pruned rows, capacity fitting, the loader-side
// validation of hostile bytes, and the decode kernels of every ISA this CPU has against their
// scalar twin (which must equal the product of the dequantized weights and activations), plus
// the prefill path that expands tiles to Q8_0.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/activation_quant.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/matmul_kernels.h"
#include "support/isa_scope.h"
#include "tensor/fp16.h"
#include "tensor/sparse_q8.h"

namespace frugal {
namespace {

// Random normal rows with a fraction `sparsity` of each row set to zero (by position, at random).
std::vector<float> pruned_rows(int64_t rows, int64_t cols, double sparsity, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (auto& x : v) x = normal(rng);
  const int64_t zeros = static_cast<int64_t>(sparsity * static_cast<double>(cols));
  std::vector<int64_t> idx(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) idx[i] = i;
    std::shuffle(idx.begin(), idx.end(), rng);
    for (int64_t i = 0; i < zeros; ++i) v[r * cols + idx[i]] = 0.0f;
  }
  return v;
}

std::vector<uint8_t> encode(const TypeTraits& t, const std::vector<float>& v, int64_t rows, int64_t cols) {
  std::vector<uint8_t> out(static_cast<size_t>(rows) * row_bytes(t, cols));
  for (int64_t r = 0; r < rows; ++r) t.quantize_row(v.data() + r * cols, out.data() + r * row_bytes(t, cols), cols);
  return out;
}

TEST(SparseQ8, TypesNamesAndBitsPerWeight) {
  for (int c : {1, 20, 32, 64}) {
    const DType t = *sparse_q8_type(c);
    EXPECT_EQ(sparse_q8_capacity(t), c);
    const TypeTraits* traits = find_type_traits(static_cast<uint32_t>(t));
    ASSERT_NE(traits, nullptr);
    EXPECT_EQ(std::string(traits->name), "sparse_q8_c" + std::to_string(c));
    EXPECT_EQ(ggml_type_name(static_cast<uint32_t>(t)), traits->name);
    EXPECT_EQ(traits->block_bytes, static_cast<size_t>(10 + c));
  }
  EXPECT_FALSE(sparse_q8_type(0).has_value());
  EXPECT_FALSE(sparse_q8_type(65).has_value());
  EXPECT_EQ(find_type_traits(kSparseQ8TypeBase), nullptr);
  EXPECT_EQ(find_type_traits(kSparseQ8TypeBase | 65), nullptr);
  EXPECT_FALSE(is_sparse_q8(DType::Q8_0));
  // 50% sparse: 5.25 bits per weight (Q8_0: 8.5).
  EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(type_traits(*sparse_q8_type(32)).block_bytes) / 64.0, 5.25);
}

TEST(SparseQ8, RoundTripKeepsZerosAndFitsTheDensestRow) {
  std::mt19937 rng(7);
  const int64_t rows = 6, cols = 576;
  for (double sparsity : {0.3, 0.5, 0.7, 0.9}) {
    std::vector<float> v = pruned_rows(rows, cols, sparsity, rng);
    v[3] = 5.0f;  // a non-zero over the per-row count in row 0 (if it was zero), so row 0 is the densest
    const DType type = sparse_q8_type_for(v.data(), rows, cols);
    int64_t densest = 0;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t nnz = 0;
      for (int64_t i = 0; i < cols; ++i) nnz += v[r * cols + i] != 0.0f;
      densest = std::max(densest, nnz);
    }
    EXPECT_EQ(sparse_q8_capacity(type), (densest + 8) / 9) << sparsity;
    const TypeTraits& t = type_traits(type);
    const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
    std::string why;
    EXPECT_TRUE(t.validate(t, bytes.data(), rows, cols, &why)) << why;
    std::vector<float> back(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(bytes.data() + r * row_bytes(t, cols), back.data(), cols);
      for (int64_t b = 0; b < cols / 64; ++b) {
        float amax = 0.0f;
        for (int j = 0; j < 64; ++j) amax = std::max(amax, std::fabs(v[r * cols + b * 64 + j]));
        for (int j = 0; j < 64; ++j) {
          const float x = v[r * cols + b * 64 + j], y = back[b * 64 + j];
          if (x == 0.0f) {
            EXPECT_EQ(y, 0.0f);
          }
          EXPECT_NEAR(y, x, amax / 127.0f * 0.51f + 1e-3f * amax);
        }
      }
      // dot_f32 agrees with the dequantized row.
      std::vector<float> x(static_cast<size_t>(cols));
      std::normal_distribution<float> normal;
      for (auto& e : x) e = normal(rng);
      double want = 0.0;
      for (int64_t i = 0; i < cols; ++i) want += static_cast<double>(back[i]) * x[i];
      EXPECT_NEAR(t.dot_f32(bytes.data() + r * row_bytes(t, cols), x.data(), cols), want, 1e-3 * (1.0 + std::fabs(want)));
    }
  }
}

TEST(SparseQ8, OverCapacityRowsKeepTheLargestMagnitudes) {
  const TypeTraits& t = type_traits(*sparse_q8_type(2));  // 2 values per 64 on average
  std::vector<float> v(128);
  for (int i = 0; i < 128; ++i) v[i] = 0.01f * static_cast<float>(i + 1);
  std::vector<uint8_t> bytes(row_bytes(t, 128));
  t.quantize_row(v.data(), bytes.data(), 128);
  std::vector<float> back(128);
  t.dequantize_row(bytes.data(), back.data(), 128);
  int nnz = 0;
  for (int i = 0; i < 128; ++i) {
    nnz += back[i] != 0.0f;
    if (i < 124) {
      EXPECT_EQ(back[i], 0.0f) << i;
    } else {
      EXPECT_NEAR(back[i], v[i], 0.01f) << i;
    }
  }
  EXPECT_EQ(nnz, 4);
}

TEST(SparseQ8, ValidationRefusesHostileBytes) {
  std::mt19937 rng(3);
  const int64_t rows = 3, cols = 128;
  std::vector<float> v = pruned_rows(rows, cols, 0.5, rng);
  for (int64_t i = 0; i < cols; ++i) v[cols + i] = 1.0f + static_cast<float>(i);  // row 1 dense: row 0 gets padding
  const TypeTraits& t = type_traits(sparse_q8_type_for(v.data(), rows, cols));
  ASSERT_EQ(sparse_q8_capacity(t.type), 64);
  const std::vector<uint8_t> good = encode(t, v, rows, cols);
  const size_t rb = row_bytes(t, cols);
  std::string why;
  ASSERT_TRUE(t.validate(t, good.data(), rows, cols, &why)) << why;

  {
    // Half of every row kept: capacity 32, no padding; a full mask promises 32 values too many.
    const std::vector<float> half = pruned_rows(rows, cols, 0.5, rng);
    const TypeTraits& t32 = type_traits(sparse_q8_type_for(half.data(), rows, cols));
    ASSERT_EQ(sparse_q8_capacity(t32.type), 32);
    std::vector<uint8_t> bad = encode(t32, half, rows, cols);
    std::memset(bad.data() + 2 * row_bytes(t32, cols), 0xff, 8);  // row 2, block 0: all 64 bits set
    EXPECT_FALSE(t32.validate(t32, bad.data(), rows, cols, &why));
    EXPECT_NE(why.find("row 2 has"), std::string::npos) << why;
    EXPECT_NE(why.find("mask bits set but room for 64 values"), std::string::npos) << why;
  }

  std::vector<uint8_t> bad = good;
  bad[rb - 1] = 1;  // row 0 holds 64 values in room for 128: its last byte is padding
  EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
  EXPECT_NE(why.find("past its 64 values"), std::string::npos) << why;

  bad = good;
  bad[cols / 64 * 10] = 0;  // row 0's first code: a zero code under a set mask bit
  EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
  EXPECT_NE(why.find("code 0"), std::string::npos) << why;
}

// Activations for one or more tokens, quantized by the reference quantizer.
struct Acts {
  std::vector<float> x;
  std::vector<uint8_t> storage;
  kernels::QuantizedActivations q;
};

Acts make_acts(int64_t cols, int64_t n_tokens, std::mt19937& rng) {
  Acts a;
  std::normal_distribution<float> normal;
  a.x.resize(static_cast<size_t>(cols * n_tokens));
  for (auto& e : a.x) e = normal(rng);
  a.storage.resize(kernels::activation_bytes(kernels::ActivationFormat::kQ8Block32, cols, n_tokens) + 64);
  uint8_t* data = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(a.storage.data()) + 63) & ~uintptr_t{63});
  a.q = kernels::make_activation_view(kernels::ActivationFormat::kQ8Block32, cols, n_tokens, data);
  kernels::quantize_activations_reference(a.x.data(), cols, 0, a.q.n_groups(), a.q);
  return a;
}

TEST(SparseQ8Kernels, EveryIsaMatchesTheScalarTwin) {
  std::mt19937 rng(11);
  // 640 columns: 10 blocks; 1344: 21 blocks, so the AVX-512 kernel's scale chunks of 16 blocks
  // have a full chunk and a partial one.
  for (const int64_t cols : {int64_t{640}, int64_t{1344}})
  for (double sparsity : {0.0, 0.5, 0.7, 0.95}) {
    const int64_t rows = 37;
    const std::vector<float> v = pruned_rows(rows, cols, sparsity, rng);
    const TypeTraits& t = type_traits(sparse_q8_type_for(v.data(), rows, cols));
    const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
    const WeightMatrix w{&t, bytes.data(), rows, cols, row_bytes(t, cols)};
    Acts a = make_acts(cols, 1, rng);
    std::vector<float> twin(rows);
    kernels::sparse_q8_rows_reference(w, 0, rows, a.q, twin.data(), rows, nullptr);
    // The twin is the exact product of the stored weights and the quantized activations.
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(w.row(r), row.data(), cols);
      double want = 0.0;
      for (int64_t k = 0; k < cols; ++k) want += static_cast<double>(row[k]) * a.q.code(0, k) * a.q.value(0, kernels::ActivationArray::kD32, k / 32);
      EXPECT_NEAR(twin[r], want, 1e-4 * (1.0 + std::fabs(want))) << r;
    }
    for (Isa isa : testing::supported_isas()) {
      const kernels::KernelTable& table = kernels::kernel_table(isa);
      ASSERT_NE(table.quant_rows[kernels::kKernelSparseQ8], nullptr) << isa_name(isa);
      std::vector<float> y(rows, -1.0f);
      // Rows split at odd places, as the threads split them.
      table.quant_rows[kernels::kKernelSparseQ8](w, 0, 5, a.q, y.data(), rows, nullptr);
      table.quant_rows[kernels::kKernelSparseQ8](w, 5, rows, a.q, y.data(), rows, nullptr);
      for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(y[r], twin[r], 1e-4f * (1.0f + std::fabs(twin[r]))) << isa_name(isa) << " row " << r;
    }
  }
  if (best_supported_isa() == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported()) {
    EXPECT_EQ(kernels::kernel_table(Isa::kAvx512Vnni).quant_rows[kernels::kKernelSparseQ8], &kernels::sparse_q8_rows_avx512);
  }
}

TEST(SparseQ8Kernels, MatmulDecodeAndPrefillMatchTheDenseProduct) {
  std::mt19937 rng(5);
  const int64_t rows = 70, cols = 256;
  const std::vector<float> v = pruned_rows(rows, cols, 0.6, rng);
  const TypeTraits& t = type_traits(sparse_q8_type_for(v.data(), rows, cols));
  const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
  const WeightMatrix w{&t, bytes.data(), rows, cols, row_bytes(t, cols)};
  // The Q8_0 tile of the prefill path holds the same values.
  std::vector<uint8_t> tile(static_cast<size_t>(rows * cols / 32 * 34));
  kernels::sparse_q8_to_q8_0(w, 0, rows, tile.data());
  std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    t.dequantize_row(w.row(r), a.data(), cols);
    type_traits(DType::Q8_0).dequantize_row(tile.data() + r * (cols / 32 * 34), b.data(), cols);
    ASSERT_EQ(a, b) << r;
  }
  // The SIMD expansions write the twin's bytes.
  for (Isa isa : testing::supported_isas()) {
    auto* expand = isa == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported() ? kernels::sparse_q8_to_q8_0_avx512
                   : isa != Isa::kScalar                                            ? kernels::sparse_q8_to_q8_0_avx2
                                                                                    : kernels::sparse_q8_to_q8_0;
    std::vector<uint8_t> fast(tile.size());
    expand(w, 3, rows, fast.data());
    EXPECT_TRUE(std::equal(fast.begin(), fast.end() - 3 * (cols / 32 * 34), tile.begin() + 3 * (cols / 32 * 34))) << isa_name(isa);
  }
  ThreadPool pool(2);
  for (int64_t n_tokens : {1, 3, 17}) {
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
      // Only the 8-bit activation rounding separates them (about 1% relative).
      EXPECT_LT(std::sqrt(err / norm), 0.02) << isa_name(isa) << " tokens " << n_tokens;
    }
  }
}

// The AVX-512 kernel loads a block's codes with full 64-byte loads except near the tensor's end:
// with the tensor placed right before an inaccessible page (as an mmapped file can end), every
// ISA's kernel must finish without touching it, at high sparsity (short rows) and with no zeros.
TEST(SparseQ8Kernels, DecodeNeverReadsPastTheTensorEnd) {
  std::mt19937 rng(23);
  const int64_t rows = 19, cols = 192;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (double sparsity : {0.0, 0.97}) {
    const std::vector<float> v = pruned_rows(rows, cols, sparsity, rng);
    const TypeTraits& t = type_traits(sparse_q8_type_for(v.data(), rows, cols));
    const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
    const size_t span = (bytes.size() + page - 1) / page * page;
    void* map = mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);
    uint8_t* base = static_cast<uint8_t*>(map);
    ASSERT_EQ(mprotect(base + span, page, PROT_NONE), 0);
    uint8_t* data = base + span - bytes.size();
    std::memcpy(data, bytes.data(), bytes.size());
    const WeightMatrix w{&t, data, rows, cols, row_bytes(t, cols)};
    Acts a = make_acts(cols, 1, rng);
    std::vector<float> twin(rows);
    kernels::sparse_q8_rows_reference(w, 0, rows, a.q, twin.data(), rows, nullptr);
    for (Isa isa : testing::supported_isas()) {
      std::vector<float> y(rows, -1.0f);
      kernels::kernel_table(isa).quant_rows[kernels::kKernelSparseQ8](w, 0, rows, a.q, y.data(), rows, nullptr);
      for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(y[r], twin[r], 1e-4f * (1.0f + std::fabs(twin[r]))) << isa_name(isa) << " row " << r;
    }
    munmap(map, span + page);
  }
}

}  // namespace
}  // namespace frugal
