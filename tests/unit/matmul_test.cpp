// The public matmul API on every instruction set the CPU supports, with 1 and 2 threads, decode
// (1 token) and prefill (odd token and row counts): against the scalar twin (same activation
// quantization, tight tolerance) and against the unquantized double reference (tolerance from the
// measured activation rounding).
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/matmul_kernels.h"
#include "support/isa_scope.h"
#include "tensor/generic_group.h"

namespace frugal {
namespace {

using testing::supported_isas;
using testing::ScopedIsa;

using kernels::ActivationFormat;

std::vector<uint8_t> quantized_normal(const TypeTraits& t, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> row(cols);
  std::vector<uint8_t> out(rows * row_bytes(t, cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = normal(rng);
    t.quantize_row(row.data(), out.data() + r * row_bytes(t, cols), cols);
  }
  return out;
}

// The twin of the whole pipeline: reference activation quantizer + scalar kernel, or the float
// reference for float types and types without a kernel.
std::vector<float> twin(const WeightMatrix& m, const std::vector<float>& x, int64_t n_tokens) {
  std::vector<float> y(n_tokens * m.rows);
  const ActivationFormat format = kernels::activation_format_for(m.traits->type);
  if (format == ActivationFormat::kNone) {
    matmul_reference(m, x.data(), m.cols, n_tokens, y.data(), m.rows);
    return y;
  }
  std::vector<uint8_t> bytes(kernels::activation_bytes(format, m.cols, n_tokens));
  const auto view = kernels::make_activation_view(format, m.cols, n_tokens, bytes.data());
  kernels::quantize_activations_reference(x.data(), m.cols, 0, (n_tokens + 7) / 8, view);
  kernels::quant_rows_reference(m, 0, m.rows, view, y.data(), m.rows, nullptr);
  return y;
}

class Matmul : public ::testing::TestWithParam<DType> {};

TEST_P(Matmul, MatchesTwinOnEveryIsaAndThreadCount) {
  const TypeTraits& t = type_traits(GetParam());
  const int64_t cols = 576 % t.block_size == 0 ? 576 : 512, rows = 53;  // K-quants, fq groups 128 and 256: 512
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const std::vector<uint8_t> stored = quantized_normal(t, rows, cols, rng);
  const WeightMatrix m{&t, stored.data(), rows, cols, row_bytes(t, cols)};
  std::vector<float> row(cols);
  for (int64_t n_tokens : {1, 2, 7, 8, 9, 33}) {
    std::vector<float> x(n_tokens * cols);
    for (auto& v : x) v = normal(rng);
    const std::vector<float> expected = twin(m, x, n_tokens);
    std::vector<double> scale(n_tokens * rows);
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(m.row(r), row.data(), cols);
      for (int64_t tk = 0; tk < n_tokens; ++tk) {
        for (int64_t k = 0; k < cols; ++k) scale[tk * rows + r] += std::fabs(row[k] * x[tk * cols + k]);
      }
    }
    for (Isa isa : supported_isas()) {
      ScopedIsa scoped(isa);
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, threads));
        std::vector<float> y(n_tokens * rows, -1.0f);
        matmul(m, x.data(), cols, n_tokens, y.data(), rows, workspace.data(), workspace.size(), pool);
        for (size_t i = 0; i < y.size(); ++i) {
          // The twin does the same integer products; only float summation order differs.
          ASSERT_NEAR(y[i], expected[i], 2e-5 * scale[i] + 1e-5)
              << t.name << " " << isa_name(isa) << " threads " << threads << " tokens " << n_tokens << " i " << i;
        }
      }
    }
  }
}

// Against the unquantized reference: the only difference allowed is the activation rounding,
// bounded by sum_k |w_k| * |x_k - xhat_k| (measured on the reference quantization), plus the
// fp16 "s" of Q8_1 for Q4_1/Q5_1 (2^-10 of the minimum term).
TEST_P(Matmul, CloseToUnquantizedProduct) {
  const TypeTraits& t = type_traits(GetParam());
  const int64_t cols = 512, rows = 19, n_tokens = 3;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  const std::vector<uint8_t> stored = quantized_normal(t, rows, cols, rng);
  const WeightMatrix m{&t, stored.data(), rows, cols, row_bytes(t, cols)};
  std::vector<float> x(n_tokens * cols);
  for (auto& v : x) v = normal(rng);
  std::vector<float> exact(n_tokens * rows);
  matmul_reference(m, x.data(), cols, n_tokens, exact.data(), rows);

  const ActivationFormat format = kernels::activation_format_for(t.type);
  std::vector<float> xhat = x;  // float types see the activations unrounded
  if (format != ActivationFormat::kNone) {
    std::vector<uint8_t> bytes(kernels::activation_bytes(format, cols, n_tokens));
    const auto view = kernels::make_activation_view(format, cols, n_tokens, bytes.data());
    kernels::quantize_activations_reference(x.data(), cols, 0, 1, view);
    const int sub = format == ActivationFormat::kQ8K ? 16 : 32;
    const auto d = format == ActivationFormat::kQ8K ? kernels::ActivationArray::kD16 : kernels::ActivationArray::kD32;
    for (int64_t tk = 0; tk < n_tokens; ++tk) {
      for (int64_t k = 0; k < cols; ++k) xhat[tk * cols + k] = view.value(tk, d, k / sub) * view.code(tk, k);
    }
  }
  const bool q8_1_s = t.type == DType::Q4_1 || t.type == DType::Q5_1;
  ThreadPool pool(2);
  std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, 2));
  std::vector<float> y(n_tokens * rows), row(cols);
  matmul(m, x.data(), cols, n_tokens, y.data(), rows, workspace.data(), workspace.size(), pool);
  for (int64_t r = 0; r < rows; ++r) {
    t.dequantize_row(m.row(r), row.data(), cols);
    for (int64_t tk = 0; tk < n_tokens; ++tk) {
      double rounding = 0, scale = 0;
      for (int64_t k = 0; k < cols; ++k) {
        rounding += std::fabs(row[k]) * std::fabs(x[tk * cols + k] - xhat[tk * cols + k]);
        scale += std::fabs(row[k] * x[tk * cols + k]);
      }
      const double tolerance = 1.001 * rounding + (q8_1_s ? 1e-3 : 2e-5) * scale + 1e-5;
      EXPECT_NEAR(y[tk * rows + r], exact[tk * rows + r], tolerance) << t.name << " row " << r << " token " << tk;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, Matmul,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                                           DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                                           DType::Q6_K, DType::Q8_1,
                                           // frugal's fq types: integer kernels (kernels/matmul_fq.h)
                                           *generic_group_type(4, 64, false), *generic_group_type(3, 32, true),
                                           *generic_group_type(2, 128, false), *generic_group_type(8, 256, true)),
                         [](const auto& info) { return std::string(type_traits(info.param).name); });

// Q, K, V (or gate, up) in one call give exactly what separate calls give, with mixed types
// (both activation formats, a float type and the dequantizing fallback in one parallel region).
TEST(MatmulSharedInput, EqualsSeparateCalls) {
  const int64_t cols = 512;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal;
  const DType types[] = {DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::F16, DType::Q8_1, DType::Q6_K};
  const int64_t rows[] = {40, 17, 64, 9, 21, 33};
  std::vector<std::vector<uint8_t>> stored;
  std::vector<WeightMatrix> weights;
  for (int i = 0; i < 6; ++i) {
    const TypeTraits& t = type_traits(types[i]);
    stored.push_back(quantized_normal(t, rows[i], cols, rng));
    weights.push_back(WeightMatrix{&t, stored.back().data(), rows[i], cols, row_bytes(t, cols)});
  }
  for (Isa isa : supported_isas()) {
    ScopedIsa scoped(isa);
    for (int threads : {1, 2}) {
      for (int64_t n_tokens : {1, 11}) {
        ThreadPool pool(threads);
        std::vector<float> x(n_tokens * cols);
        for (auto& v : x) v = normal(rng);
        std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, threads));
        std::vector<std::vector<float>> together(6), separate(6);
        std::vector<MatmulTarget> targets;
        for (int i = 0; i < 6; ++i) {
          together[i].assign(n_tokens * rows[i], -1.0f);
          separate[i].assign(n_tokens * rows[i], -2.0f);
          targets.push_back(MatmulTarget{&weights[i], together[i].data(), rows[i]});
          matmul(weights[i], x.data(), cols, n_tokens, separate[i].data(), rows[i], workspace.data(), workspace.size(),
                 pool);
        }
        matmul_shared_input(targets, x.data(), cols, n_tokens, workspace.data(), workspace.size(), pool);
        for (int i = 0; i < 6; ++i) {
          EXPECT_EQ(together[i], separate[i]) << type_traits(types[i]).name << " " << isa_name(isa) << " threads "
                                              << threads << " tokens " << n_tokens;
        }
      }
    }
  }
}

// Strided input and output (views into wider buffers) on the prefill path.
TEST(Matmul, HonoursStrides) {
  const TypeTraits& t = type_traits(DType::Q4_1);
  const int64_t cols = 576, rows = 48, n_tokens = 10, x_stride = cols + 64, y_stride = rows + 7;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const std::vector<uint8_t> stored = quantized_normal(t, rows, cols, rng);
  const WeightMatrix m{&t, stored.data(), rows, cols, row_bytes(t, cols)};
  std::vector<float> x(n_tokens * x_stride), dense(n_tokens * cols);
  for (int64_t tk = 0; tk < n_tokens; ++tk) {
    for (int64_t k = 0; k < cols; ++k) dense[tk * cols + k] = x[tk * x_stride + k] = normal(rng);
  }
  ThreadPool pool(2);
  std::vector<uint8_t> workspace(matmul_workspace_bytes(cols, n_tokens, 2));
  std::vector<float> y(n_tokens * y_stride, 123.0f), y_dense(n_tokens * rows);
  matmul(m, x.data(), x_stride, n_tokens, y.data(), y_stride, workspace.data(), workspace.size(), pool);
  matmul(m, dense.data(), cols, n_tokens, y_dense.data(), rows, workspace.data(), workspace.size(), pool);
  for (int64_t tk = 0; tk < n_tokens; ++tk) {
    for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(y[tk * y_stride + r], y_dense[tk * rows + r]);
    for (int64_t r = rows; r < y_stride; ++r) EXPECT_EQ(y[tk * y_stride + r], 123.0f) << "wrote past the row";
  }
}

}  // namespace
}  // namespace frugal
