// Batch invariance of the public matmul: on every instruction set, every weight format (integer
// kernels, float kernels, the dequantize-to-float fallback, W8A8 per-token inputs with LLM.int8()
// outliers) and thread count, row t of a batched product is bit-identical to the same token
// multiplied alone (the decode path); sparse-q8, sparse-q4 and the N:M types, whose decode kernels are their own, to float rounding (1e-5, N:M 3e-5). Speculative verification (runtime/speculative.h) and
// batched serving of many sequences rely on it: a token's logits must not depend on what else is
// in the batch. Widths cover one column pass and several (inputs wider than 768 columns are
// summed in passes in prefill), token counts one private group, several shared groups.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "compress/w8a8.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "support/isa_scope.h"
#include "tensor/generic_group.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"
#include "tensor/sparse_q8.h"

namespace frugal {
namespace {

using testing::ScopedIsa;
using testing::supported_isas;

std::vector<float> normal_values(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = normal(rng);
  return v;
}

// Activations as a model's: normal with a few large channels, one all-zero block per token.
std::vector<float> activations(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::vector<float> x = normal_values(n_tokens * cols, rng);
  for (int64_t t = 0; t < n_tokens; ++t) {
    x[t * cols + (13 * t + 5) % cols] *= 30.0f;
    const int64_t zero_block = (t % (cols / 32)) * 32;
    for (int64_t k = 0; k < 32; ++k) x[t * cols + zero_block + k] = 0.0f;
  }
  return x;
}

struct Weight {
  std::vector<uint8_t> bytes;
  compress::Int8Matrix int8;  // W8A8 only
  WeightMatrix w;
};

Weight make_weight(const TypeTraits& t, int64_t rows, int64_t cols, std::mt19937& rng, double sparsity = 0.0) {
  Weight out;
  std::vector<float> v = normal_values(rows * cols, rng, 0.05f);
  if (sparsity > 0) {
    std::uniform_real_distribution<double> u;
    for (auto& e : v) {
      if (u(rng) < sparsity) e = 0.0f;
    }
  }
  const size_t rb = row_bytes(t, cols);
  out.bytes.resize(rows * rb);
  for (int64_t r = 0; r < rows; ++r) t.quantize_row(v.data() + r * cols, out.bytes.data() + r * rb, cols);
  out.w = WeightMatrix{&t, out.bytes.data(), rows, cols, rb};
  return out;
}

// Runs w on all tokens at once and on each token alone; every output must have the same bits.
// tolerance 0: bit for bit; otherwise |batched - alone| <= tolerance * max(1, |alone|).
void expect_batch_invariant(const WeightMatrix& w, int64_t n_tokens, ThreadPool& pool, const std::string& what,
                            float tolerance = 0.0f) {
  std::mt19937 rng(static_cast<uint32_t>(w.rows * 31 + w.cols + n_tokens));
  const std::vector<float> x = activations(n_tokens, w.cols, rng);
  std::vector<uint8_t> workspace(matmul_workspace_bytes(w.cols, n_tokens, pool.size()));
  std::vector<float> batched(static_cast<size_t>(n_tokens * w.rows), -7.0f), alone(static_cast<size_t>(w.rows), -7.0f);
  matmul(w, x.data(), w.cols, n_tokens, batched.data(), w.rows, workspace.data(), workspace.size(), pool);
  int64_t differing = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    matmul(w, x.data() + t * w.cols, w.cols, 1, alone.data(), w.rows, workspace.data(), workspace.size(), pool);
    for (int64_t r = 0; r < w.rows; ++r) {
      const float a = batched[t * w.rows + r], b = alone[r];
      const bool differs = tolerance > 0 ? std::fabs(a - b) > tolerance * std::max(1.0f, std::fabs(b))
                                         : std::memcmp(&a, &b, sizeof(float)) != 0;
      if (differs) {
        if (++differing <= 3) ADD_FAILURE() << what << ": token " << t << " row " << r << " batched " << a << " alone " << b;
      }
    }
  }
  EXPECT_EQ(differing, 0) << what << " (" << n_tokens << " tokens, " << w.cols << " columns)";
}

class BatchInvariance : public ::testing::TestWithParam<DType> {};

TEST_P(BatchInvariance, BatchedRowsEqualTheOneTokenPathBitForBit) {
  const TypeTraits& t = type_traits(GetParam());
  const bool large_blocks = t.block_size >= 128;  // K-quants, fq groups of 128 and 256
  std::mt19937 rng(3);
  // 53 rows: full register tiles and a partial one on every ISA.
  for (int64_t cols : {large_blocks ? int64_t{512} : int64_t{576}, int64_t{1536}, int64_t{2048}}) {
    const Weight weight = make_weight(t, 53, cols, rng);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for (Isa isa : supported_isas()) {
        ScopedIsa scope(isa);
        for (int64_t n_tokens : {3, 9, 70}) {
          expect_batch_invariant(weight.w, n_tokens, pool, std::string(t.name) + " on " + isa_name(isa));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, BatchInvariance,
                         ::testing::Values(DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K,
                                           DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::F32, DType::F16,
                                           DType::BF16,
                                           // frugal's fq types (kernels/matmul_fq.h)
                                           *generic_group_type(2, 64, false), *generic_group_type(3, 128, false),
                                           *generic_group_type(4, 32, false), *generic_group_type(5, 256, true),
                                           *generic_group_type(6, 32, true), *generic_group_type(7, 128, false),
                                           *generic_group_type(8, 64, false), *generic_group_type(8, 32, true)),
                         [](const ::testing::TestParamInfo<DType>& info) { return std::string(type_traits(info.param).name); });

// Formats outside the type table: q8_1 weights (dequantize-to-float fallback), sparse-q8,
// sparse-q4 and N:M (expanded to Q8_0 tiles for prefill, their own kernels for decode: equal to
// float rounding, not bit for bit), and W8A8 per-token inputs with 16-bit outlier columns.
TEST(BatchInvarianceOther, FallbackSparseAndPerTokenInputs) {
  std::mt19937 rng(9);
  ThreadPool pool(2);
  const int64_t rows = 45, cols = 1536;
  const Weight generic = make_weight(type_traits(DType::Q8_1), rows, cols, rng);
  const Weight sparse_dense = make_weight(type_traits(DType::F32), rows, cols, rng, 0.6);
  const std::vector<float> sparse_values(reinterpret_cast<const float*>(sparse_dense.bytes.data()),
                                         reinterpret_cast<const float*>(sparse_dense.bytes.data()) + rows * cols);
  const TypeTraits& st = type_traits(sparse_q8_type_for(sparse_values.data(), rows, cols));
  Weight sparse;
  sparse.bytes.resize(rows * row_bytes(st, cols));
  for (int64_t r = 0; r < rows; ++r) st.quantize_row(sparse_values.data() + r * cols, sparse.bytes.data() + r * row_bytes(st, cols), cols);
  sparse.w = WeightMatrix{&st, sparse.bytes.data(), rows, cols, row_bytes(st, cols)};
  // sparse-q4 (tensor/sparse_q4.h) follows the same documented rule as sparse-q8.
  const TypeTraits& st4 = type_traits(sparse_q4_type_for(sparse_values.data(), rows, cols));
  Weight sparse4;
  sparse4.bytes.resize(rows * row_bytes(st4, cols));
  for (int64_t r = 0; r < rows; ++r) st4.quantize_row(sparse_values.data() + r * cols, sparse4.bytes.data() + r * row_bytes(st4, cols), cols);
  sparse4.w = WeightMatrix{&st4, sparse4.bytes.data(), rows, cols, row_bytes(st4, cols)};
  // N:M (tensor/nm_sparse.h): the same rule; the reference quantizer keeps 2 of every 4.
  const TypeTraits& nmt = type_traits(*nm_type(4, 2, 4));
  Weight nm;
  nm.bytes.resize(rows * row_bytes(nmt, cols));
  for (int64_t r = 0; r < rows; ++r) nmt.quantize_row(sparse_values.data() + r * cols, nm.bytes.data() + r * row_bytes(nmt, cols), cols);
  nm.w = WeightMatrix{&nmt, nm.bytes.data(), rows, cols, row_bytes(nmt, cols)};
  Weight w8a8;
  const std::vector<float> dense = normal_values(rows * cols, rng, 0.05f);
  const std::vector<int32_t> outliers = {5, 300, 1000};
  w8a8.int8 = compress::quantize_int8_per_channel(dense.data(), rows, cols, outliers);
  w8a8.w = WeightMatrix{&type_traits(DType::Q8_0), w8a8.int8.q8_0.data(), rows, cols, row_bytes(type_traits(DType::Q8_0), cols)};
  w8a8.w.per_token_input = true;
  w8a8.w.outlier_columns = w8a8.int8.outliers.data();
  w8a8.w.outlier_weights = w8a8.int8.outlier_weight.data();
  w8a8.w.n_outliers = static_cast<int64_t>(w8a8.int8.outliers.size());
  for (Isa isa : supported_isas()) {
    ScopedIsa scope(isa);
    for (int64_t n_tokens : {2, 9, 40}) {
      expect_batch_invariant(generic.w, n_tokens, pool, std::string("q8_1 fallback on ") + isa_name(isa));
      // sparse-q8 decodes with its own one-token kernels (the format's speed-up) and prefills
      // through Q8_0 tiles: the same integers, summed in another order (see kernels/matmul.cpp).
      expect_batch_invariant(sparse.w, n_tokens, pool, std::string("sparse-q8 on ") + isa_name(isa), 1e-5f);
      expect_batch_invariant(sparse4.w, n_tokens, pool, std::string("sparse-q4 on ") + isa_name(isa), 1e-5f);
      // 3e-5: one output of 45 x 9 differed by 1.05e-5 at |y| = 0.28 with 1e-5 (the 24 block
      // products cancel; the orders differ as for sparse-q8).
      expect_batch_invariant(nm.w, n_tokens, pool, std::string("nm-q4 on ") + isa_name(isa), 3e-5f);
      expect_batch_invariant(w8a8.w, n_tokens, pool, std::string("w8a8 on ") + isa_name(isa));
    }
  }
}

// Several weights sharing one input (Q, K, V; gate, up) are split between threads together; each
// target's rows must still equal its one-token product.
TEST(BatchInvarianceOther, SharedInputTargets) {
  std::mt19937 rng(4);
  ThreadPool pool(2);
  const int64_t cols = 576, n_tokens = 11;
  const Weight a = make_weight(type_traits(DType::Q4_1), 96, cols, rng), b = make_weight(type_traits(DType::Q8_0), 37, cols, rng);
  const std::vector<float> x = activations(n_tokens, cols, rng);
  std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, pool.size()));
  for (Isa isa : supported_isas()) {
    ScopedIsa scope(isa);
    std::vector<float> ya(n_tokens * 96), yb(n_tokens * 37), one_a(96), one_b(37);
    const MatmulTarget batch[] = {{&a.w, ya.data(), 96}, {&b.w, yb.data(), 37}};
    matmul_shared_input(batch, x.data(), cols, n_tokens, workspace.data(), workspace.size(), pool);
    for (int64_t t = 0; t < n_tokens; ++t) {
      const MatmulTarget one[] = {{&a.w, one_a.data(), 96}, {&b.w, one_b.data(), 37}};
      matmul_shared_input(one, x.data() + t * cols, cols, 1, workspace.data(), workspace.size(), pool);
      EXPECT_EQ(0, std::memcmp(one_a.data(), ya.data() + t * 96, 96 * sizeof(float))) << isa_name(isa) << " token " << t;
      EXPECT_EQ(0, std::memcmp(one_b.data(), yb.data() + t * 37, 37 * sizeof(float))) << isa_name(isa) << " token " << t;
    }
  }
}

}  // namespace
}  // namespace frugal
