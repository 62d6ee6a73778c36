// Unit tests of compress/format_grid: fitted grids encode bit-exactly (dequantize_row returns the
// grid values) for every GGML type, arbitrary codes round-trip, the weighted fit never loses to
// the traits' round-to-nearest, and the generic group grids behave for all bit widths.
#include "compress/format_grid.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "tensor/fp16.h"
#include "tensor/weight_codec.h"

namespace frugal::compress {
namespace {

// Every format with a grid in the codec table (tensor/weight_codec.h): Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1 and the K-quants Q2_K..Q6_K today; a new codec with a grid joins these tests by itself.
const std::vector<DType> kTypes = [] {
  std::vector<DType> types;
  for (const WeightCodec& c : weight_codecs()) {
    if (c.grid.kind != GridKind::kNone) types.push_back(c.type);
  }
  return types;
}();

TEST(FormatGrid, EveryCodecGridIsSupported) {
  EXPECT_EQ(kTypes.size(), 10u);
  for (DType type : kTypes) EXPECT_TRUE(format_grid_supported(type)) << type_traits(type).name;
  EXPECT_FALSE(format_grid_supported(DType::F16));
  EXPECT_FALSE(format_grid_supported(DType::Q8_K));
}

// A weight-like row: Gaussian with a different spread per 32 elements, a few outliers, one block
// of zeros and one constant run, so edge cases show up in every format.
std::vector<float> weight_row(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.2f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; b += 32) {
    const float spread = 0.02f * uniform(rng);
    const float shift = 0.01f * normal(rng);
    for (int64_t i = b; i < std::min(n, b + 32); ++i) x[static_cast<size_t>(i)] = shift + spread * normal(rng);
  }
  for (int k = 0; k < 3; ++k) x[static_cast<size_t>(rng() % n)] *= 12.0f;
  if (n >= 256) {
    for (int64_t i = 64; i < 96; ++i) x[static_cast<size_t>(i)] = 0.0f;
    for (int64_t i = 160; i < 176; ++i) x[static_cast<size_t>(i)] = 0.013f;
  }
  return x;
}

// Importance like diag(X^T X) of LLM activations: log-normal with a few channels far larger.
std::vector<float> importance_row(int64_t n, std::mt19937& rng) {
  std::lognormal_distribution<float> lognormal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& v : w) v = lognormal(rng);
  for (int k = 0; k < 4; ++k) w[static_cast<size_t>(rng() % n)] *= 100.0f;
  return w;
}

int64_t test_length(DType type) { return type_traits(type).block_size == 256 ? 1024 : 256; }

TEST(FormatGrid, LayoutsMatchTheBlockFormats) {
  for (DType type : kTypes) {
    SCOPED_TRACE(type_traits(type).name);
    ASSERT_TRUE(format_grid_supported(type));
    const FormatLayout l = format_layout(type);
    EXPECT_EQ(l.block_size, type_traits(type).block_size);
    EXPECT_EQ(l.sub_size * l.sub_count, l.block_size);
  }
  EXPECT_FALSE(format_grid_supported(DType::F16));
  EXPECT_FALSE(format_grid_supported(DType::Q8_K));
}

// Fit + nearest codes + encode, decoded by the traits: the decoded values equal the grid values
// exactly, and the stored parameters read back unchanged.
TEST(FormatGrid, FitEncodeReproducesGridValuesExactly) {
  std::mt19937 rng(1);
  for (DType type : kTypes) {
    const TypeTraits& t = type_traits(type);
    SCOPED_TRACE(t.name);
    const int64_t n = test_length(type);
    const int64_t bs = t.block_size;
    for (int variant = 0; variant < 4; ++variant) {
      const GridFit fit = variant % 2 == 0 ? GridFit::kSearch : GridFit::kMinMax;
      const std::vector<float> x = weight_row(n, rng);
      const std::vector<float> imp = importance_row(n, rng);
      const float* importance = variant < 2 ? imp.data() : nullptr;
      std::vector<uint8_t> bytes(row_bytes(t, n));
      std::vector<float> expected(static_cast<size_t>(n)), decoded(static_cast<size_t>(n));
      std::vector<int8_t> q(static_cast<size_t>(bs));
      for (int64_t b = 0; b < n / bs; ++b) {
        const BlockGrid g = fit_block_grid(type, x.data() + b * bs, importance ? importance + b * bs : nullptr, fit);
        nearest_codes(g, x.data() + b * bs, q.data());
        grid_values(g, q.data(), expected.data() + b * bs);
        encode_block(g, q.data(), bytes.data() + b * t.block_bytes);
        const BlockGrid back = read_block_grid(type, bytes.data() + b * t.block_bytes);
        EXPECT_EQ(back.d, g.d);
        EXPECT_EQ(back.m, g.m);
        const FormatLayout l = format_layout(type);
        for (int j = 0; j < l.sub_count && l.two_level; ++j) {
          EXPECT_EQ(back.scale_code[j], g.scale_code[j]);
          EXPECT_EQ(back.min_code[j], g.min_code[j]);
        }
        // Each code is the nearest grid point.
        for (int64_t e = 0; e < bs; ++e) {
          const AffineGrid sg = sub_grid(g, static_cast<int>(e / l.sub_size));
          const float xv = x[static_cast<size_t>(b * bs + e)];
          const float err = std::fabs(xv - sg.value(q[static_cast<size_t>(e)]));
          for (int qq = sg.qmin; qq <= sg.qmax; ++qq) {
            ASSERT_LE(err, std::fabs(xv - sg.value(qq)) * (1.0f + 1e-5f) + 1e-12f);
          }
        }
      }
      t.dequantize_row(bytes.data(), decoded.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(decoded[static_cast<size_t>(i)], expected[static_cast<size_t>(i)]) << "element " << i << " variant " << variant;
      }
      // kMinMax is exactly the traits' round-to-nearest encoding.
      if (fit == GridFit::kMinMax) {
        std::vector<uint8_t> rtn(bytes.size());
        t.quantize_row(x.data(), rtn.data(), n);
        std::vector<float> rtn_decoded(static_cast<size_t>(n));
        t.dequantize_row(rtn.data(), rtn_decoded.data(), n);
        EXPECT_EQ(rtn_decoded, decoded);
      }
    }
  }
}

// Random parameters and random codes (every bit of every field exercised) decode to the grid.
TEST(FormatGrid, ArbitraryCodesRoundTripBitExactly) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> uniform(-0.05f, 0.05f);
  for (DType type : kTypes) {
    const TypeTraits& t = type_traits(type);
    SCOPED_TRACE(t.name);
    const FormatLayout l = format_layout(type);
    for (int trial = 0; trial < 50; ++trial) {
      BlockGrid g;
      g.type = type;
      g.d = float_to_fp16(uniform(rng));
      g.m = float_to_fp16(uniform(rng));
      if (type == DType::Q8_0 || type == DType::Q4_0 || type == DType::Q5_0 || type == DType::Q3_K || type == DType::Q6_K) g.m = 0;
      for (int j = 0; j < 16; ++j) {
        switch (type) {
          case DType::Q2_K: g.scale_code[j] = rng() % 16; g.min_code[j] = rng() % 16; break;
          case DType::Q3_K: g.scale_code[j] = static_cast<int16_t>(static_cast<int>(rng() % 64) - 32); break;
          case DType::Q4_K:
          case DType::Q5_K: if (j < 8) { g.scale_code[j] = rng() % 64; g.min_code[j] = rng() % 64; } break;
          case DType::Q6_K: g.scale_code[j] = static_cast<int16_t>(static_cast<int>(rng() % 256) - 128); break;
          default: break;
        }
      }
      std::vector<int8_t> q(static_cast<size_t>(l.block_size));
      for (int8_t& v : q) v = static_cast<int8_t>(l.qmin + static_cast<int>(rng() % (l.qmax - l.qmin + 1)));
      std::vector<uint8_t> bytes(t.block_bytes);
      std::vector<float> expected(static_cast<size_t>(l.block_size)), decoded(static_cast<size_t>(l.block_size));
      encode_block(g, q.data(), bytes.data());
      grid_values(g, q.data(), expected.data());
      t.dequantize_row(bytes.data(), decoded.data(), l.block_size);
      ASSERT_EQ(decoded, expected) << "trial " << trial;
      // The codes are recoverable where the grid is not degenerate.
      for (int64_t e = 0; e < l.block_size; ++e) {
        const AffineGrid sg = sub_grid(g, static_cast<int>(e / l.sub_size));
        if (sg.scale != 0.0f) {
          ASSERT_EQ(sg.nearest(decoded[static_cast<size_t>(e)]), q[static_cast<size_t>(e)]);
        }
      }
    }
  }
}

// quantize_row_weighted is never worse than the traits' quantize_row in weighted squared error,
// per row, with and without importance; it should be clearly better on average.
TEST(FormatGrid, WeightedRowNeverWorseThanRoundToNearest) {
  std::mt19937 rng(3);
  for (DType type : kTypes) {
    const TypeTraits& t = type_traits(type);
    const int64_t n = test_length(type);
    double sum_rtn[2] = {0, 0}, sum_weighted[2] = {0, 0};
    for (int row = 0; row < 12; ++row) {
      const std::vector<float> x = weight_row(n, rng);
      const std::vector<float> imp = importance_row(n, rng);
      for (int k = 0; k < 2; ++k) {
        const float* importance = k == 0 ? nullptr : imp.data();
        std::vector<uint8_t> a(row_bytes(t, n)), b(row_bytes(t, n));
        std::vector<float> da(static_cast<size_t>(n)), db(static_cast<size_t>(n));
        t.quantize_row(x.data(), a.data(), n);
        quantize_row_weighted(type, x.data(), importance, b.data(), n);
        t.dequantize_row(a.data(), da.data(), n);
        t.dequantize_row(b.data(), db.data(), n);
        const double e_rtn = weighted_squared_error(x.data(), da.data(), importance, n);
        const double e_w = weighted_squared_error(x.data(), db.data(), importance, n);
        ASSERT_LE(e_w, e_rtn) << t.name << " row " << row << (k ? " weighted" : " plain");
        sum_rtn[k] += e_rtn;
        sum_weighted[k] += e_w;
      }
    }
    std::printf("[ grid     ] %-5s search/RTN squared error: plain %.3f, importance-weighted %.3f\n", t.name,
                sum_weighted[0] / sum_rtn[0], sum_weighted[1] / sum_rtn[1]);
    // At 8 bits the rounding noise dominates and a better scale hardly matters; below that the
    // importance-weighted search must win clearly.
    if (type != DType::Q8_0) {
      EXPECT_LT(sum_weighted[1], (type == DType::Q6_K ? 0.97 : 0.9) * sum_rtn[1]) << t.name;
    }
  }
}

TEST(FormatGrid, ZeroRowsStayExactlyZero) {
  for (DType type : kTypes) {
    const TypeTraits& t = type_traits(type);
    const int64_t n = t.block_size * 2;
    std::vector<float> x(static_cast<size_t>(n), 0.0f), out(static_cast<size_t>(n), 1.0f);
    std::vector<uint8_t> bytes(row_bytes(t, n));
    quantize_row_weighted(type, x.data(), nullptr, bytes.data(), n);
    t.dequantize_row(bytes.data(), out.data(), n);
    for (float v : out) ASSERT_EQ(v, 0.0f) << t.name;
  }
}

TEST(FormatGrid, GenericGridsForAllBitWidthsAndGroupings) {
  std::mt19937 rng(4);
  const int64_t n = 576;
  const std::vector<float> x = weight_row(n, rng);
  const std::vector<float> imp = importance_row(n, rng);
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool symmetric : {false, true}) {
      for (int64_t group : {int64_t{32}, int64_t{100}, int64_t{128}, int64_t{0}}) {
        const GenericGridSpec spec{bits, group, symmetric};
        SCOPED_TRACE(QuantTarget::generic_grid(bits, group, symmetric).name());
        const int64_t groups = spec.group_count(n);
        EXPECT_EQ(groups, group == 0 ? 1 : (n + group - 1) / group);
        double err[2];
        for (int f = 0; f < 2; ++f) {
          const GridFit fit = f == 0 ? GridFit::kMinMax : GridFit::kSearch;
          std::vector<int16_t> codes(static_cast<size_t>(n));
          std::vector<AffineGrid> grids(static_cast<size_t>(groups));
          std::vector<float> values(static_cast<size_t>(n));
          quantize_row_generic(spec, x.data(), imp.data(), n, fit, codes.data(), grids.data(), values.data());
          for (int64_t i = 0; i < n; ++i) {
            const AffineGrid& g = grids[static_cast<size_t>(i / spec.group_length(n))];
            ASSERT_EQ(g.qmin, spec.qmin());
            ASSERT_EQ(g.qmax, spec.qmax());
            ASSERT_GE(codes[static_cast<size_t>(i)], g.qmin);
            ASSERT_LE(codes[static_cast<size_t>(i)], g.qmax);
            ASSERT_EQ(values[static_cast<size_t>(i)], g.value(codes[static_cast<size_t>(i)]));
            if (symmetric) {
              ASSERT_EQ(g.offset, 0.0f);
            }
          }
          err[f] = weighted_squared_error(x.data(), values.data(), imp.data(), n);
        }
        EXPECT_LE(err[1], err[0]);
        if (bits <= 4) {
          EXPECT_LT(err[1], err[0]);
        }
      }
    }
  }
}

TEST(FormatGrid, TargetsAndMatrices) {
  EXPECT_TRUE(check_target(QuantTarget::format(DType::Q4_0), 576).is_ok());
  EXPECT_FALSE(check_target(QuantTarget::format(DType::Q4_K), 576).is_ok());
  EXPECT_FALSE(check_target(QuantTarget::format(DType::F16), 512).is_ok());
  EXPECT_FALSE(check_target(QuantTarget::generic_grid(9, 128, false), 512).is_ok());
  EXPECT_EQ(QuantTarget::format(DType::Q3_K).name(), "q3_K");
  EXPECT_EQ(QuantTarget::generic_grid(3, 128, false).name(), "int3 g128 asym");

  std::mt19937 rng(5);
  const int64_t rows = 3, cols = 512;
  std::vector<float> w;
  for (int r = 0; r < rows; ++r) {
    const std::vector<float> row = weight_row(cols, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  const QuantizedMatrix m = quantize_matrix(QuantTarget::format(DType::Q4_K), w.data(), rows, cols, nullptr, GridFit::kMinMax);
  const TypeTraits& t = type_traits(DType::Q4_K);
  ASSERT_EQ(m.row_bytes, row_bytes(t, cols));
  std::vector<uint8_t> rtn(m.data.size());
  for (int r = 0; r < rows; ++r) t.quantize_row(w.data() + r * cols, rtn.data() + r * m.row_bytes, cols);
  EXPECT_EQ(m.data, rtn);
  const QuantizedMatrix g = quantize_matrix(QuantTarget::generic_grid(4, 128, true), w.data(), rows, cols, nullptr, GridFit::kSearch);
  EXPECT_EQ(g.grids.size(), static_cast<size_t>(rows * 4));
  EXPECT_EQ(g.codes.size(), w.size());
}

}  // namespace
}  // namespace frugal::compress
