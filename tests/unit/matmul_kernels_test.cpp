// Kernel-level twins: for every instruction set this CPU supports, the SIMD activation quantizer
// must produce the scalar reference's bytes exactly, and every fast matmul kernel must match its
// scalar twin on random blocks (raw random bytes too, so every code value and scale pattern
// occurs); the twin itself must equal the product of the dequantized weights and activations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/matmul_kernels.h"
#include "support/isa_scope.h"
#include "tensor/fp16.h"
#include "tensor/generic_group.h"

namespace frugal {
namespace {

using testing::supported_isas;

using kernels::ActivationArray;
using kernels::ActivationFormat;
using kernels::QuantizedActivations;

// Offsets of the fp16 scale fields of each block (ggml-common.h block_* structs).
std::vector<size_t> half_fields(DType type) {
  switch (type) {
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: return {0};
    case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: return {0, 2};
    case DType::Q2_K: return {80, 82};
    case DType::Q3_K: return {108};
    case DType::Q6_K: return {208};
    default:
      // frugal's generic group types: scale, then the offset of asymmetric layouts.
      if (const auto f = generic_group_format(type)) return f->symmetric ? std::vector<size_t>{0} : std::vector<size_t>{0, 2};
      return {};
  }
}

// Weights of a quantized type: either the type's reference quantizer applied to normal floats,
// or raw random bytes with sane fp16 scales (every code, sub-scale and minimum pattern occurs).
std::vector<uint8_t> random_weights(const TypeTraits& t, int64_t rows, int64_t cols, bool raw, std::mt19937& rng) {
  const size_t rb = row_bytes(t, cols);
  std::vector<uint8_t> out(rows * rb);
  if (!raw) {
    std::normal_distribution<float> normal;
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& v : row) v = normal(rng);
      t.quantize_row(row.data(), out.data() + r * rb, cols);
    }
    return out;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.002f, 0.05f);
  for (auto& b : out) b = static_cast<uint8_t>(byte(rng));
  const size_t n_blocks = out.size() / t.block_bytes;
  for (size_t b = 0; b < n_blocks; ++b) {
    for (size_t offset : half_fields(t.type)) {
      const float sign = (byte(rng) & 1) && offset == 0 && t.block_size == 32 ? -1.0f : 1.0f;
      const uint16_t h = float_to_fp16(sign * scale(rng));
      std::memcpy(out.data() + b * t.block_bytes + offset, &h, 2);
    }
  }
  return out;
}

// Normal activations with outliers and one all-zero 32-column block per token (amax = 0).
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

struct Activations {
  std::vector<uint8_t> bytes;
  QuantizedActivations view;
};

Activations quantize_reference(ActivationFormat format, const std::vector<float>& x, int64_t n_tokens, int64_t cols) {
  Activations a;
  a.bytes.assign(kernels::activation_bytes(format, cols, n_tokens) + 64, 0xab);
  a.view = kernels::make_activation_view(format, cols, n_tokens, a.bytes.data());
  kernels::quantize_activations_reference(x.data(), cols, 0, (n_tokens + 7) / 8, a.view);
  return a;
}

// sum_k |w_k x_k| of one row and token, the scale of the float rounding errors.
double magnitude(const std::vector<float>& w_row, const float* x) {
  double m = 0;
  for (size_t k = 0; k < w_row.size(); ++k) m += std::fabs(static_cast<double>(w_row[k]) * x[k]);
  return m;
}

TEST(CpuFeatures, NamesParseAndLevelsClamp) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    Isa parsed;
    ASSERT_TRUE(parse_isa(isa_name(isa), &parsed));
    EXPECT_EQ(parsed, isa);
  }
  Isa parsed;
  EXPECT_FALSE(parse_isa("sse9", &parsed));
  const Isa saved = active_isa();
  EXPECT_EQ(set_active_isa(Isa::kAvx512Vnni), best_supported_isa());
  EXPECT_EQ(set_active_isa(Isa::kScalar), Isa::kScalar);
  EXPECT_STREQ(active_isa_name(), "scalar");
  set_active_isa(saved);
  std::printf("[ info ] best ISA: %s\n", isa_name(best_supported_isa()));
}

TEST(ActivationQuant, SimdMatchesReferenceBytes) {
  std::mt19937 rng(11);
  for (ActivationFormat format : {ActivationFormat::kQ8Block32, ActivationFormat::kQ8K}) {
    for (int64_t cols : {512, 576, 1536}) {
      if (format == ActivationFormat::kQ8K && cols % 256 != 0) continue;
      for (int64_t n_tokens : {1, 5, 8, 13}) {
        const std::vector<float> x = random_activations(n_tokens, cols, rng);
        const Activations expected = quantize_reference(format, x, n_tokens, cols);
        for (Isa isa : supported_isas()) {
          std::vector<uint8_t> bytes(expected.bytes.size(), 0xab);
          const QuantizedActivations view = kernels::make_activation_view(format, cols, n_tokens, bytes.data());
          const int64_t groups = (n_tokens + 7) / 8;
          // Two calls over disjoint group ranges, as two threads would make them.
          kernels::kernel_table(isa).quantize(x.data(), cols, 0, groups / 2, view);
          kernels::kernel_table(isa).quantize(x.data(), cols, groups / 2, groups, view);
          EXPECT_EQ(std::memcmp(bytes.data(), expected.bytes.data(), bytes.size()), 0)
              << isa_name(isa) << " cols " << cols << " tokens " << n_tokens;
        }
      }
    }
  }
}

// The reference quantizer follows ggml: Q8_0/Q8_1 d = fp16(amax / 127) and codes round(x * 127 /
// amax); Q8_K d = max / -127 for the signed largest-magnitude element.
TEST(ActivationQuant, FollowsGgmlDefinitions) {
  std::mt19937 rng(5);
  const int64_t cols = 512, n_tokens = 3;
  const std::vector<float> x = random_activations(n_tokens, cols, rng);
  const Activations a = quantize_reference(ActivationFormat::kQ8Block32, x, n_tokens, cols);
  const Activations k = quantize_reference(ActivationFormat::kQ8K, x, n_tokens, cols);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[t * cols + b * 32 + i]));
      EXPECT_EQ(a.view.value(t, ActivationArray::kD32, b), fp16_to_float(float_to_fp16(amax / 127.0f)));
      int sum = 0;
      for (int i = 0; i < 32; ++i) {
        const float v = x[t * cols + b * 32 + i];
        const int expected = amax == 0.0f ? 0 : static_cast<int>(std::nearbyint(v * (127.0f / amax)));
        EXPECT_EQ(a.view.code(t, b * 32 + i), expected);
        sum += expected;
      }
      EXPECT_FLOAT_EQ(a.view.value(t, ActivationArray::kS32, b), a.view.value(t, ActivationArray::kD32, b) * sum);
    }
    for (int64_t k0 = 0; k0 < cols; ++k0) {
      const float d = k.view.value(t, ActivationArray::kD16, k0 / 16);
      EXPECT_NEAR(d * k.view.code(t, k0), x[t * cols + k0], std::fabs(d) * 0.5f + 1e-7f);
    }
  }
}

// A corrupt model's activations hold NaN and infinities (found by fuzz/gguf_model_fuzzer.cpp: the
// scalar quantizer converted NaN to int, undefined behaviour that UBSan reports). Every quantizer
// must stay defined, and blocks without such values must come out as if the others were finite.
TEST(ActivationQuant, NonFiniteValuesStayInTheirBlock) {
  std::mt19937 rng(17);
  const int64_t cols = 512, n_tokens = 2;
  std::vector<float> x = random_activations(n_tokens, cols, rng);
  std::vector<float> clean = x;
  const int64_t bad[] = {5, 40, cols + 300};
  const float values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1e38f};
  for (int i = 0; i < 3; ++i) {
    x[bad[i]] = values[i];
    clean[bad[i]] = 0.0f;
  }
  for (ActivationFormat format : {ActivationFormat::kQ8Block32, ActivationFormat::kQ8K}) {
    const int64_t block = format == ActivationFormat::kQ8K ? 256 : 32;
    const Activations expected = quantize_reference(format, clean, n_tokens, cols);
    for (Isa isa : supported_isas()) {
      std::vector<uint8_t> bytes(expected.bytes.size(), 0xab);
      const QuantizedActivations view = kernels::make_activation_view(format, cols, n_tokens, bytes.data());
      if (isa == Isa::kScalar) {
        kernels::quantize_activations_reference(x.data(), cols, 0, 1, view);
      } else {
        kernels::kernel_table(isa).quantize(x.data(), cols, 0, 1, view);
      }
      for (int64_t t = 0; t < n_tokens; ++t) {
        for (int64_t k = 0; k < cols; ++k) {
          bool touched = false;
          for (int64_t b : bad) touched = touched || (b / cols == t && (b % cols) / block == k / block);
          if (!touched) {
            ASSERT_EQ(view.code(t, k), expected.view.code(t, k)) << isa_name(isa) << " token " << t << " column " << k;
          }
        }
      }
    }
  }
}

class KernelTwins : public ::testing::TestWithParam<DType> {};

// The scalar twin equals sum_k w_k * xhat_k (dequantized weights times dequantized activations)
// in double, up to float rounding; for Q4_1/Q5_1 the minimum multiplies block_q8_1's fp16 "s" as
// in ggml, which adds up to 2^-10 relative error on that term.
TEST_P(KernelTwins, ReferenceEqualsDequantizedProduct) {
  const TypeTraits& t = type_traits(GetParam());
  const ActivationFormat format = kernels::activation_format_for(t.type);
  std::mt19937 rng(21);
  const int64_t cols = 512, rows = 9, n_tokens = 5;
  for (bool raw : {false, true}) {
    const std::vector<uint8_t> w = random_weights(t, rows, cols, raw, rng);
    const WeightMatrix m{&t, w.data(), rows, cols, row_bytes(t, cols)};
    const std::vector<float> x = random_activations(n_tokens, cols, rng);
    const Activations a = quantize_reference(format, x, n_tokens, cols);
    std::vector<float> y(n_tokens * rows);
    kernels::quant_rows_reference(m, 0, rows, a.view, y.data(), rows, nullptr);
    const bool q8_1_s = t.type == DType::Q4_1 || t.type == DType::Q5_1;
    std::vector<float> row(cols), xhat(cols);
    for (int64_t r = 0; r < rows; ++r) {
      t.dequantize_row(m.row(r), row.data(), cols);
      for (int64_t tk = 0; tk < n_tokens; ++tk) {
        const ActivationArray d = format == ActivationFormat::kQ8K ? ActivationArray::kD16 : ActivationArray::kD32;
        const int sub = format == ActivationFormat::kQ8K ? 16 : 32;
        double expected = 0;
        for (int64_t k = 0; k < cols; ++k) {
          xhat[k] = a.view.value(tk, d, k / sub) * a.view.code(tk, k);
          expected += static_cast<double>(row[k]) * xhat[k];
        }
        const double scale = magnitude(row, xhat.data());
        const double tolerance = 1e-5 * scale + (q8_1_s ? 1e-3 * scale : 0.0) + 1e-6;
        ASSERT_NEAR(y[tk * rows + r], expected, tolerance) << t.name << " raw " << raw << " row " << r << " token " << tk;
      }
    }
  }
}

// Every ISA's kernel against the scalar twin, on any row range (partial tiles) and token count
// (partial token groups and register tiles).
TEST_P(KernelTwins, FastKernelsMatchReference) {
  const TypeTraits& t = type_traits(GetParam());
  const ActivationFormat format = kernels::activation_format_for(t.type);
  std::mt19937 rng(33);
  for (int64_t cols : {512, 576, 1536}) {
    if (cols % t.block_size != 0) continue;
    const int64_t rows = 37;
    for (bool raw : {false, true}) {
      const std::vector<uint8_t> w = random_weights(t, rows, cols, raw, rng);
      const WeightMatrix m{&t, w.data(), rows, cols, row_bytes(t, cols)};
      for (int64_t n_tokens : {1, 2, 3, 5, 8, 9, 13, 17}) {
        const std::vector<float> x = random_activations(n_tokens, cols, rng);
        const Activations a = quantize_reference(format, x, n_tokens, cols);
        std::vector<float> expected(n_tokens * rows, 0.0f);
        kernels::quant_rows_reference(m, 0, rows, a.view, expected.data(), rows, nullptr);
        std::vector<float> row(cols), xhat(cols);
        std::vector<double> scale(n_tokens * rows);
        for (int64_t r = 0; r < rows; ++r) {
          t.dequantize_row(m.row(r), row.data(), cols);
          for (int64_t tk = 0; tk < n_tokens; ++tk) scale[tk * rows + r] = magnitude(row, x.data() + tk * cols);
        }
        for (Isa isa : supported_isas()) {
          const kernels::KernelTable& table = kernels::kernel_table(isa);
          std::vector<uint8_t> scratch(table.scratch_bytes(cols) + 64);
          uint8_t* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t{63});
          std::vector<float> y(n_tokens * rows, -1.0f);
          // Two calls with a split that is not a multiple of any tile.
          table.quant_rows[kernels::kernel_type_index(t.type)](m, 0, 21, a.view, y.data(), rows, aligned);
          table.quant_rows[kernels::kernel_type_index(t.type)](m, 21, rows, a.view, y.data(), rows, aligned);
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_NEAR(y[i], expected[i], 1e-5 * scale[i] + 1e-5)
                << t.name << " " << isa_name(isa) << " cols " << cols << " raw " << raw << " tokens " << n_tokens
                << " row " << i % rows << " token " << i / rows;
          }
        }
      }
    }
  }
}

// The folded 16-element K-quants (matmul_simd.h, kFoldWords) keep sub-block dots in int16 halves
// (Q2_K, Q3_K) and super-block sums in int32: the largest codes, scales and minimums a block can
// hold (every byte 0xff, 0x80, 0x7f or 0x00 but sane fp16 factors) against activation codes of
// +-127 everywhere (one token +127 but for one code per super-block, one all -127, one
// alternating per sub-block) must still match the scalar twin on every ISA, in decode (1 token)
// and prefill (3 tokens).
TEST(FoldedKQuants, ExtremeBlocksMatchReference) {
  for (DType type : {DType::Q2_K, DType::Q3_K, DType::Q6_K}) {
    const TypeTraits& t = type_traits(type);
    const ActivationFormat format = kernels::activation_format_for(t.type);
    const int64_t rows = 37, cols = 2048;  // 2048: two prefill passes of 1024 columns
    for (int fill : {0xff, 0x80, 0x7f, 0x00}) {
      std::vector<uint8_t> w(rows * row_bytes(t, cols), static_cast<uint8_t>(fill));
      const uint16_t h = float_to_fp16(0.03f);
      for (size_t b = 0; b < w.size() / t.block_bytes; ++b) {
        for (size_t offset : half_fields(t.type)) std::memcpy(w.data() + b * t.block_bytes + offset, &h, 2);
      }
      const WeightMatrix m{&t, w.data(), rows, cols, row_bytes(t, cols)};
      std::vector<float> x(3 * cols);
      for (int64_t k = 0; k < cols; ++k) {
        // Q8_K's d = max / -127 with max the first element of largest magnitude, which gets code
        // -127: a slightly larger -1 first in each super-block gives +127 everywhere else.
        x[k] = k % 256 == 0 ? -1.0001f : 1.0f;
        x[cols + k] = 1.0f;                             // codes -127
        x[2 * cols + k] = (k / 16) % 2 ? 1.0f : -1.0f;  // -127 / +127 by sub-block
      }
      for (int64_t n_tokens : {1, 3}) {
        const Activations a = quantize_reference(format, x, n_tokens, cols);
        std::vector<float> expected(n_tokens * rows, 0.0f);
        kernels::quant_rows_reference(m, 0, rows, a.view, expected.data(), rows, nullptr);
        std::vector<float> row(cols);
        std::vector<double> scale(n_tokens * rows);
        for (int64_t r = 0; r < rows; ++r) {
          t.dequantize_row(m.row(r), row.data(), cols);
          for (int64_t tk = 0; tk < n_tokens; ++tk) scale[tk * rows + r] = magnitude(row, x.data() + tk * cols);
        }
        for (Isa isa : supported_isas()) {
          const kernels::KernelTable& table = kernels::kernel_table(isa);
          std::vector<uint8_t> scratch(table.scratch_bytes(cols) + 64);
          uint8_t* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t{63});
          std::vector<float> y(n_tokens * rows, -1.0f);
          table.quant_rows[kernels::kernel_type_index(t.type)](m, 0, 21, a.view, y.data(), rows, aligned);
          table.quant_rows[kernels::kernel_type_index(t.type)](m, 21, rows, a.view, y.data(), rows, aligned);
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_NEAR(y[i], expected[i], 1e-5 * scale[i] + 1e-5)
                << t.name << " " << isa_name(isa) << " fill " << fill << " tokens " << n_tokens << " row " << i % rows
                << " token " << i / rows;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, KernelTwins,
                         ::testing::Values(DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K,
                                           DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                                           // frugal's fq types (kernels/matmul_fq.h): every bit width,
                                           // every group size, both symmetries
                                           *generic_group_type(2, 64, false), *generic_group_type(2, 32, true),
                                           *generic_group_type(3, 128, false), *generic_group_type(3, 32, true),
                                           *generic_group_type(4, 32, false), *generic_group_type(4, 256, true),
                                           *generic_group_type(5, 32, false), *generic_group_type(5, 64, true),
                                           *generic_group_type(6, 256, false), *generic_group_type(6, 128, true),
                                           *generic_group_type(7, 64, false), *generic_group_type(7, 32, true),
                                           *generic_group_type(8, 32, false), *generic_group_type(8, 128, true)),
                         [](const auto& info) { return std::string(type_traits(info.param).name); });

class FloatKernelTwins : public ::testing::TestWithParam<DType> {};

TEST_P(FloatKernelTwins, FastKernelsMatchReference) {
  const TypeTraits& t = type_traits(GetParam());
  std::mt19937 rng(44);
  for (int64_t cols : {576, 1536, 100}) {
    const int64_t rows = 37;
    const std::vector<uint8_t> w = random_weights(t, rows, cols, false, rng);
    const WeightMatrix m{&t, w.data(), rows, cols, row_bytes(t, cols)};
    for (int64_t n_tokens : {1, 2, 3, 5, 9}) {
      std::vector<float> x(n_tokens * cols);
      std::normal_distribution<float> normal;
      for (auto& v : x) v = normal(rng);
      std::vector<float> expected(n_tokens * rows);
      kernels::float_rows_reference(m, 0, rows, x.data(), cols, n_tokens, expected.data(), rows);
      std::vector<float> row(cols);
      std::vector<double> scale(n_tokens * rows);
      for (int64_t r = 0; r < rows; ++r) {
        t.dequantize_row(m.row(r), row.data(), cols);
        for (int64_t tk = 0; tk < n_tokens; ++tk) scale[tk * rows + r] = magnitude(row, x.data() + tk * cols);
      }
      for (Isa isa : supported_isas()) {
        const kernels::KernelTable& table = kernels::kernel_table(isa);
        std::vector<float> y(n_tokens * rows, -1.0f);
        table.float_rows[kernels::kernel_type_index(t.type)](m, 0, 13, x.data(), cols, n_tokens, y.data(), rows);
        table.float_rows[kernels::kernel_type_index(t.type)](m, 13, rows, x.data(), cols, n_tokens, y.data(), rows);
        for (size_t i = 0; i < y.size(); ++i) {
          // Float sums over `cols` products: relative error well below 1e-5 of sum |w x|.
          ASSERT_NEAR(y[i], expected[i], 1e-5 * scale[i] + 1e-6)
              << t.name << " " << isa_name(isa) << " cols " << cols << " tokens " << n_tokens << " i " << i;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, FloatKernelTwins, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(type_traits(info.param).name); });

}  // namespace
}  // namespace frugal
