// sparse-q4 (tensor/sparse_q4.h): round trip of pruned rows, capacity fitting with the per-block
// pad nibble, the loader-side validation of hostile bytes, and the decode kernels of every ISA
// this CPU has against their scalar twin (which must equal the product of the dequantized weights
// and activations), plus the prefill path that expands tiles to Q8_0.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

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
#include "kernels/sparse_q4_kernels.h"
#include "support/isa_scope.h"
#include "tensor/fp16.h"
#include "tensor/sparse_q4.h"

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

TEST(SparseQ4, TypesNamesAndBitsPerWeight) {
  for (int c : {2, 20, 32, 64}) {
    const DType t = *sparse_q4_type(c);
    EXPECT_EQ(sparse_q4_capacity(t), c);
    const TypeTraits* traits = find_type_traits(static_cast<uint32_t>(t));
    ASSERT_NE(traits, nullptr);
    EXPECT_EQ(std::string(traits->name), "sparse_q4_c" + std::to_string(c));
    EXPECT_EQ(ggml_type_name(static_cast<uint32_t>(t)), traits->name);
    EXPECT_EQ(traits->block_bytes, static_cast<size_t>(10 + c / 2));
  }
  EXPECT_FALSE(sparse_q4_type(0).has_value());
  EXPECT_FALSE(sparse_q4_type(31).has_value());  // odd capacities do not exist
  EXPECT_FALSE(sparse_q4_type(66).has_value());
  EXPECT_EQ(find_type_traits(kSparseQ4TypeBase), nullptr);
  EXPECT_EQ(find_type_traits(kSparseQ4TypeBase | 31), nullptr);
  EXPECT_EQ(find_type_traits(kSparseQ4TypeBase | 66), nullptr);
  EXPECT_FALSE(is_sparse_q4(DType::Q4_0));
  EXPECT_FALSE(is_sparse_q4(*sparse_q8_type(32)));
  EXPECT_TRUE(is_bitmask_sparse(*sparse_q4_type(32)));
  // 50% sparse: 3.25 bits per weight (Q4_0: 4.5).
  EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(type_traits(*sparse_q4_type(32)).block_bytes) / 64.0, 3.25);
}

// Bytes of codes a row needs: ceil(k / 2) per block.
int64_t code_bytes(const float* row, int64_t cols) {
  int64_t bytes = 0;
  for (int64_t b = 0; b < cols / 64; ++b) {
    int k = 0;
    for (int j = 0; j < 64; ++j) k += row[b * 64 + j] != 0.0f;
    bytes += (k + 1) / 2;
  }
  return bytes;
}

TEST(SparseQ4, RoundTripKeepsZerosAndFitsTheDensestRow) {
  std::mt19937 rng(7);
  const int64_t rows = 6, cols = 576;
  for (double sparsity : {0.3, 0.5, 0.7, 0.9}) {
    std::vector<float> v = pruned_rows(rows, cols, sparsity, rng);
    v[3] = 5.0f;
    const DType type = sparse_q4_type_for(v.data(), rows, cols);
    int64_t densest = 0;
    for (int64_t r = 0; r < rows; ++r) densest = std::max(densest, code_bytes(v.data() + r * cols, cols));
    EXPECT_EQ(sparse_q4_capacity(type), 2 * ((densest + 8) / 9)) << sparsity;
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
          // Half a step of 4-bit symmetric rounding (step amax / 7), plus the fp16 scale.
          EXPECT_NEAR(y, x, amax / 7.0f * 0.51f + 1e-3f * amax);
        }
      }
      std::vector<float> x(static_cast<size_t>(cols));
      std::normal_distribution<float> normal;
      for (auto& e : x) e = normal(rng);
      double want = 0.0;
      for (int64_t i = 0; i < cols; ++i) want += static_cast<double>(back[i]) * x[i];
      EXPECT_NEAR(t.dot_f32(bytes.data() + r * row_bytes(t, cols), x.data(), cols), want, 1e-3 * (1.0 + std::fabs(want)));
    }
  }
}

TEST(SparseQ4, OverCapacityRowsKeepTheLargestMagnitudesThatFit) {
  const TypeTraits& t = type_traits(*sparse_q4_type(2));  // 1 byte (2 codes) per 64 on average
  std::vector<float> v(128, 0.0f);
  // Two bytes of room. By magnitude: 1.0 and 0.9 (block 0) share a byte, 0.8 (block 1) takes the
  // second, 0.7 (block 0) would need a third and is dropped, 0.6 fills block 1's pad nibble, 0.01
  // (block 0) would need a third byte again.
  v[10] = 1.0f, v[20] = 0.9f, v[70] = 0.8f, v[30] = 0.7f, v[80] = 0.6f, v[40] = 0.01f;
  std::vector<uint8_t> bytes(row_bytes(t, 128));
  t.quantize_row(v.data(), bytes.data(), 128);
  std::vector<float> back(128);
  t.dequantize_row(bytes.data(), back.data(), 128);
  for (int i = 0; i < 128; ++i) {
    if (i == 10 || i == 20 || i == 70 || i == 80) {
      EXPECT_NEAR(back[i], v[i], 0.08f) << i;
    } else {
      EXPECT_EQ(back[i], 0.0f) << i;
    }
  }
}

TEST(SparseQ4, ValidationRefusesHostileBytes) {
  std::mt19937 rng(3);
  const int64_t rows = 3, cols = 128;
  std::vector<float> v = pruned_rows(rows, cols, 0.5, rng);
  for (int64_t i = 0; i < cols; ++i) v[cols + i] = 1.0f + static_cast<float>(i % 7);  // row 1 dense: row 0 gets padding
  const TypeTraits& t = type_traits(sparse_q4_type_for(v.data(), rows, cols));
  ASSERT_EQ(sparse_q4_capacity(t.type), 64);
  const std::vector<uint8_t> good = encode(t, v, rows, cols);
  const size_t rb = row_bytes(t, cols);
  std::string why;
  ASSERT_TRUE(t.validate(t, good.data(), rows, cols, &why)) << why;

  {
    // Capacity 32 (32 bytes per 2 blocks); a full mask on row 2's block 0 promises 16 bytes too many.
    std::vector<float> half(static_cast<size_t>(rows * cols), 0.0f);
    for (int64_t i = 0; i < rows * cols; i += 2) half[i] = 1.0f + static_cast<float>(i % 5);
    const TypeTraits& t32 = type_traits(sparse_q4_type_for(half.data(), rows, cols));
    ASSERT_EQ(sparse_q4_capacity(t32.type), 32);
    std::vector<uint8_t> bad = encode(t32, half, rows, cols);
    ASSERT_TRUE(t32.validate(t32, bad.data(), rows, cols, &why)) << why;
    std::memset(bad.data() + 2 * row_bytes(t32, cols), 0xff, 8);
    EXPECT_FALSE(t32.validate(t32, bad.data(), rows, cols, &why));
    EXPECT_NE(why.find("row 2 has mask bits set for 48 bytes of codes but room for 32"), std::string::npos) << why;
  }

  // Row 0 (about 64 non-zeros in room for 128 codes): a non-zero byte past its codes.
  std::vector<uint8_t> bad = good;
  bad[rb - 1] = 0x11;
  EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
  EXPECT_NE(why.find("row 0 has non-zero bytes past its"), std::string::npos) << why;

  // Row 0's first code set to 8 (the value 0 under a set mask bit), then to 0.
  for (uint8_t code : {uint8_t{8}, uint8_t{0}}) {
    bad = good;
    bad[cols / 64 * 10] = static_cast<uint8_t>((bad[cols / 64 * 10] & 0xf0) | code);
    EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
    EXPECT_NE(why.find("row 0 block 0 stores a code " + std::to_string(code)), std::string::npos) << why;
  }

  // A block with an odd count whose pad nibble is not zero.
  uint64_t m0;
  std::memcpy(&m0, good.data(), 8);
  const int k0 = std::popcount(m0);
  bad = good;
  if (k0 % 2 == 1) {
    bad[cols / 64 * 10 + k0 / 2] |= 0x30;
  } else {  // make it odd: drop block 0's last set bit (its code becomes the pad)
    m0 &= ~(uint64_t{1} << (63 - std::countl_zero(m0)));
    std::memcpy(bad.data(), &m0, 8);
  }
  EXPECT_FALSE(t.validate(t, bad.data(), rows, cols, &why));
  EXPECT_NE(why.find("row 0 block 0 has a non-zero pad nibble"), std::string::npos) << why;
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

TEST(SparseQ4Kernels, EveryIsaMatchesTheScalarTwin) {
  std::mt19937 rng(11);
  // 640 columns: 10 blocks; 1344: 21 blocks (a full and a partial chunk of 16 scales).
  for (const int64_t cols : {int64_t{640}, int64_t{1344}})
  for (double sparsity : {0.0, 0.5, 0.7, 0.95}) {
    const int64_t rows = 37;
    const std::vector<float> v = pruned_rows(rows, cols, sparsity, rng);
    const TypeTraits& t = type_traits(sparse_q4_type_for(v.data(), rows, cols));
    const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
    const WeightMatrix w{&t, bytes.data(), rows, cols, row_bytes(t, cols)};
    Acts a = make_acts(cols, 1, rng);
    std::vector<float> twin(rows);
    kernels::sparse_q4_rows_reference(w, 0, rows, a.q, twin.data(), rows, nullptr);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(w.row(r), row.data(), cols);
      double want = 0.0;
      for (int64_t k = 0; k < cols; ++k) want += static_cast<double>(row[k]) * a.q.code(0, k) * a.q.value(0, kernels::ActivationArray::kD32, k / 32);
      EXPECT_NEAR(twin[r], want, 1e-4 * (1.0 + std::fabs(want))) << r;
    }
    for (Isa isa : testing::supported_isas()) {
      const kernels::KernelTable& table = kernels::kernel_table(isa);
      ASSERT_NE(table.quant_rows[kernels::kKernelSparseQ4], nullptr) << isa_name(isa);
      std::vector<float> y(rows, -1.0f);
      table.quant_rows[kernels::kKernelSparseQ4](w, 0, 5, a.q, y.data(), rows, nullptr);
      table.quant_rows[kernels::kKernelSparseQ4](w, 5, rows, a.q, y.data(), rows, nullptr);
      for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(y[r], twin[r], 1e-4f * (1.0f + std::fabs(twin[r]))) << isa_name(isa) << " row " << r;
    }
  }
  if (best_supported_isa() == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported()) {
    EXPECT_EQ(kernels::kernel_table(Isa::kAvx512Vnni).quant_rows[kernels::kKernelSparseQ4], &kernels::sparse_q4_rows_avx512);
  }
}

TEST(SparseQ4Kernels, MatmulDecodeAndPrefillMatchTheDenseProduct) {
  std::mt19937 rng(5);
  const int64_t rows = 70, cols = 256;
  const std::vector<float> v = pruned_rows(rows, cols, 0.6, rng);
  const TypeTraits& t = type_traits(sparse_q4_type_for(v.data(), rows, cols));
  const std::vector<uint8_t> bytes = encode(t, v, rows, cols);
  const WeightMatrix w{&t, bytes.data(), rows, cols, row_bytes(t, cols)};
  std::vector<uint8_t> tile(static_cast<size_t>(rows * cols / 32 * 34));
  kernels::sparse_q4_to_q8_0(w, 0, rows, tile.data());
  std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    t.dequantize_row(w.row(r), a.data(), cols);
    type_traits(DType::Q8_0).dequantize_row(tile.data() + r * (cols / 32 * 34), b.data(), cols);
    ASSERT_EQ(a, b) << r;
  }
  if (kernels::sparse_q8_avx512_supported()) {
    std::vector<uint8_t> fast(tile.size());
    kernels::sparse_q4_to_q8_0_avx512(w, 3, rows, fast.data());
    EXPECT_TRUE(std::equal(fast.begin(), fast.end() - 3 * (cols / 32 * 34), tile.begin() + 3 * (cols / 32 * 34)));
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
      EXPECT_LT(std::sqrt(err / norm), 0.02) << isa_name(isa) << " tokens " << n_tokens;
    }
  }
}

// The AVX-512 kernel loads a block's codes with full 32-byte loads except near the tensor's end:
// with the tensor right before an inaccessible page, every ISA's kernel must not touch it.
TEST(SparseQ4Kernels, DecodeNeverReadsPastTheTensorEnd) {
  std::mt19937 rng(23);
  const int64_t rows = 19, cols = 192;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (double sparsity : {0.0, 0.97}) {
    const std::vector<float> v = pruned_rows(rows, cols, sparsity, rng);
    const TypeTraits& t = type_traits(sparse_q4_type_for(v.data(), rows, cols));
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
    kernels::sparse_q4_rows_reference(w, 0, rows, a.q, twin.data(), rows, nullptr);
    for (Isa isa : testing::supported_isas()) {
      std::vector<float> y(rows, -1.0f);
      kernels::kernel_table(isa).quant_rows[kernels::kKernelSparseQ4](w, 0, rows, a.q, y.data(), rows, nullptr);
      for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(y[r], twin[r], 1e-4f * (1.0f + std::fabs(twin[r]))) << isa_name(isa) << " row " << r;
    }
    if (kernels::sparse_q8_avx512_supported()) {  // the prefill expansion's masked loads too
      std::vector<uint8_t> tile(static_cast<size_t>(rows * cols / 32 * 34)), fast(tile.size());
      kernels::sparse_q4_to_q8_0(w, 0, rows, tile.data());
      kernels::sparse_q4_to_q8_0_avx512(w, 0, rows, fast.data());
      EXPECT_EQ(tile, fast);
    }
    munmap(map, span + page);
  }
}

}  // namespace
}  // namespace frugal
