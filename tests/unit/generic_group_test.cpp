// Unit tests of frugal's generic group types (tensor/generic_group.h): ids and names, the bit
// stream layout, round-to-nearest within half a step, dot products, bit-exact storage of the
// generic grids GPTQ/AWQ fit (compress/format_grid), and loading such tensors from GGUF.
#include "tensor/generic_group.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/format_grid.h"
#include "compress/gptq.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"
#include "tensor/fp16.h"

namespace frugal {
namespace {

using compress::AffineGrid;
using compress::GenericGridSpec;
using compress::GridFit;
using compress::QuantizedMatrix;
using compress::QuantTarget;

const int64_t kGroups[] = {32, 64, 128, 256};

std::vector<GenericGroupFormat> all_formats() {
  std::vector<GenericGroupFormat> out;
  for (bool symmetric : {false, true}) {
    for (int bits = 2; bits <= 8; ++bits) {
      for (int64_t group : kGroups) out.push_back({bits, group, symmetric});
    }
  }
  return out;
}

std::string expected_name(const GenericGroupFormat& f) {
  return "fq" + std::to_string(f.bits) + (f.symmetric ? "s" : "") + "_g" + std::to_string(f.group);
}

const TypeTraits& traits_of(const GenericGroupFormat& f) {
  return type_traits(*generic_group_type(f.bits, f.group, f.symmetric));
}

// Weight-like values: Gaussian with a spread and shift that change every 32 elements.
std::vector<float> random_row(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.2f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; b += 32) {
    const float spread = 0.02f * uniform(rng), shift = 0.01f * normal(rng);
    for (int64_t i = b; i < b + 32 && i < n; ++i) x[static_cast<size_t>(i)] = shift + spread * normal(rng);
  }
  return x;
}

// Code i of a block read bit by bit from the stream spec (element i at bits [i*bits, (i+1)*bits)).
int stream_code(const uint8_t* codes, int bits, int64_t i) {
  int v = 0;
  for (int k = 0; k < bits; ++k) {
    const int64_t bit = i * bits + k;
    v |= ((codes[bit / 8] >> (bit % 8)) & 1) << k;
  }
  return v;
}

float block_half(const uint8_t* block, int index) {
  uint16_t h;
  std::memcpy(&h, block + 2 * index, sizeof h);
  return fp16_to_float(h);
}

TEST(GenericGroup, IdsNamesAndTraits) {
  for (const GenericGroupFormat& f : all_formats()) {
    const std::string name = expected_name(f);
    SCOPED_TRACE(name);
    const std::optional<DType> type = generic_group_type(f.bits, f.group, f.symmetric);
    ASSERT_TRUE(type.has_value());
    const uint32_t id = static_cast<uint32_t>(*type);
    EXPECT_EQ(id, 0x46510000u | (f.symmetric ? 0x1000u : 0u) | static_cast<uint32_t>(f.bits) << 4 |
                      static_cast<uint32_t>(std::log2(f.group / 32)));
    const std::optional<GenericGroupFormat> back = generic_group_format(*type);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->bits, f.bits);
    EXPECT_EQ(back->group, f.group);
    EXPECT_EQ(back->symmetric, f.symmetric);
    const TypeTraits* t = find_type_traits(id);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t, &type_traits(*type));
    EXPECT_EQ(t->type, *type);
    EXPECT_EQ(std::string(t->name), name);
    EXPECT_EQ(ggml_type_name(id), name);
    EXPECT_EQ(t->block_size, f.group);
    EXPECT_EQ(t->block_bytes, (f.symmetric ? 2u : 4u) + static_cast<size_t>(f.group * f.bits / 8));
    EXPECT_EQ(t->block_bytes, f.block_bytes());
  }
  EXPECT_EQ(std::string(type_traits(*generic_group_type(3, 128, false)).name), "fq3_g128");
  EXPECT_EQ(std::string(type_traits(*generic_group_type(3, 128, true)).name), "fq3s_g128");

  EXPECT_FALSE(generic_group_type(1, 128, false).has_value());
  EXPECT_FALSE(generic_group_type(9, 128, false).has_value());
  EXPECT_FALSE(generic_group_type(4, 100, false).has_value());
  EXPECT_FALSE(generic_group_type(4, 512, true).has_value());
  EXPECT_FALSE(generic_group_format(DType::Q4_0).has_value());
  const uint32_t unknown[] = {kGenericTypeBase,           kGenericTypeBase | 0x14, kGenericTypeBase | 0x90,
                              kGenericTypeBase | 0x34,    kGenericTypeBase | 0x2032, kGenericTypeBase | 0x0132,
                              kGenericTypeBase + 0x10032, kGenericTypeBase - 1};
  for (uint32_t id : unknown) {
    EXPECT_EQ(find_type_traits(id), nullptr) << std::hex << id;
    EXPECT_EQ(ggml_type_name(id), "unknown type") << std::hex << id;
  }
}

// Hand-checked stream: 3-bit codes 0..7 are 0b111'110'101'100'011'010'001'000 = 0xFAC688, stored
// little-endian as 88 C6 FA, four times over a group of 32.
TEST(GenericGroup, ThreeBitPackingByHand) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % 8);
  const uint8_t stream[] = {0x88, 0xc6, 0xfa};
  auto block_of = [&](std::vector<uint8_t> header) {
    for (int k = 0; k < 12; ++k) header.push_back(stream[k % 3]);
    return header;
  };
  std::vector<uint8_t> expected = block_of({0x00, 0x3c, 0x00, 0x00});  // scale 1.0, offset 0.0
  const TypeTraits& asym = type_traits(*generic_group_type(3, 32, false));
  std::vector<uint8_t> block(asym.block_bytes);
  asym.quantize_row(x.data(), block.data(), 32);
  EXPECT_EQ(block, expected);
  std::vector<float> y(32);
  asym.dequantize_row(expected.data(), y.data(), 32);
  EXPECT_EQ(y, x);

  // Symmetric: values -4..3 with scale 1 are codes q = -4..3, stored as q + 4 = 0..7.
  for (float& v : x) v -= 4.0f;
  expected = block_of({0x00, 0x3c});  // scale 1.0, no offset field
  const TypeTraits& sym = type_traits(*generic_group_type(3, 32, true));
  block.assign(sym.block_bytes, 0);
  sym.quantize_row(x.data(), block.data(), 32);
  EXPECT_EQ(block, expected);
  sym.dequantize_row(expected.data(), y.data(), 32);
  EXPECT_EQ(y, x);
}

TEST(GenericGroup, EncodedCodesFollowTheBitStreamSpec) {
  std::mt19937 rng(1);
  for (const GenericGroupFormat& f : all_formats()) {
    SCOPED_TRACE(expected_name(f));
    std::uniform_int_distribution<int> code(f.qmin(), f.qmax());
    std::vector<int16_t> q(static_cast<size_t>(f.group));
    for (int16_t& v : q) v = static_cast<int16_t>(code(rng));
    q[0] = static_cast<int16_t>(f.qmin());
    q[1] = static_cast<int16_t>(f.qmax());
    const GenericGroupParams params{float_to_fp16(0.25f), float_to_fp16(-1.5f)};
    std::vector<uint8_t> block(f.block_bytes());
    encode_generic_group_block(f, params, q.data(), block.data());
    const uint8_t* codes = block.data() + (f.symmetric ? 2 : 4);
    const int bias = f.symmetric ? 1 << (f.bits - 1) : 0;
    std::vector<float> y(static_cast<size_t>(f.group));
    traits_of(f).dequantize_row(block.data(), y.data(), f.group);
    for (int64_t i = 0; i < f.group; ++i) {
      ASSERT_EQ(stream_code(codes, f.bits, i), q[static_cast<size_t>(i)] + bias) << i;
      const float offset = f.symmetric ? 0.0f : -1.5f;
      ASSERT_EQ(y[static_cast<size_t>(i)], 0.25f * static_cast<float>(q[static_cast<size_t>(i)]) + offset) << i;
    }
  }
}

// Round-to-nearest: every value is within half a step of its decoded value, except (symmetric)
// values of the other sign than the largest-magnitude one that lie past the grid's end, which
// decode to that end.
TEST(GenericGroup, QuantizeRowIsWithinHalfAStep) {
  std::mt19937 rng(2);
  const int64_t n = 512;
  for (const GenericGroupFormat& f : all_formats()) {
    SCOPED_TRACE(expected_name(f));
    const TypeTraits& t = traits_of(f);
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<float> x = random_row(n, rng);
      if (trial == 1) std::fill(x.begin(), x.begin() + f.group, 0.0f);
      if (trial == 2) std::fill(x.begin(), x.begin() + f.group, 0.013f);
      if (trial == 3) x[static_cast<size_t>(rng() % n)] *= 40.0f;
      std::vector<uint8_t> bytes(row_bytes(t, n));
      std::vector<float> y(static_cast<size_t>(n));
      t.quantize_row(x.data(), bytes.data(), n);
      t.dequantize_row(bytes.data(), y.data(), n);
      for (int64_t b = 0; b < n / f.group; ++b) {
        const uint8_t* block = bytes.data() + b * t.block_bytes;
        const AffineGrid grid{block_half(block, 0), f.symmetric ? 0.0f : block_half(block, 1), f.qmin(), f.qmax()};
        const float lo = std::min(grid.value(f.qmin()), grid.value(f.qmax()));
        const float hi = std::max(grid.value(f.qmin()), grid.value(f.qmax()));
        const float half_step = 0.5f * std::fabs(grid.scale);
        for (int64_t i = b * f.group; i < (b + 1) * f.group; ++i) {
          const float xi = x[static_cast<size_t>(i)], yi = y[static_cast<size_t>(i)];
          const float slack = 1e-6f * std::fabs(xi) + 1e-9f;
          if (f.symmetric && (xi < lo || xi > hi)) {
            ASSERT_EQ(yi, xi < lo ? lo : hi) << i;
          } else {
            ASSERT_LE(std::fabs(xi - yi), half_step + slack) << i << " x " << xi << " y " << yi;
          }
        }
      }
    }
  }
}

TEST(GenericGroup, DotMatchesDequantizedDot) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 768;
  for (const GenericGroupFormat& f : all_formats()) {
    SCOPED_TRACE(expected_name(f));
    const TypeTraits& t = traits_of(f);
    const std::vector<float> w = random_row(n, rng);
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) v = normal(rng);
    std::vector<uint8_t> bytes(row_bytes(t, n));
    t.quantize_row(w.data(), bytes.data(), n);
    t.dequantize_row(bytes.data(), y.data(), n);
    double expected = 0.0, magnitude = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      expected += static_cast<double>(y[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
      magnitude += std::fabs(static_cast<double>(y[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)]);
    }
    EXPECT_NEAR(t.dot_f32(bytes.data(), x.data(), n), expected, 1e-6 * magnitude + 1e-12);
  }
}

TEST(GenericGroup, StorageTypes) {
  using compress::generic_storage_type;
  EXPECT_EQ(generic_storage_type({3, 128, false}, 512), generic_group_type(3, 128, false));
  EXPECT_EQ(generic_storage_type({4, 32, true}, 96), generic_group_type(4, 32, true));
  EXPECT_FALSE(generic_storage_type({3, 100, false}, 500).has_value());
  EXPECT_FALSE(generic_storage_type({3, 128, false}, 640 + 32).has_value());
  EXPECT_FALSE(generic_storage_type({9, 128, false}, 512).has_value());
  // Per channel: the largest group of 256/128/64/32 that divides the row.
  EXPECT_EQ(generic_storage_type({3, 0, false}, 768), generic_group_type(3, 256, false));
  EXPECT_EQ(generic_storage_type({3, 0, false}, 384), generic_group_type(3, 128, false));
  EXPECT_EQ(generic_storage_type({3, 512, true}, 384), generic_group_type(3, 128, true));
  EXPECT_EQ(generic_storage_type({5, -1, true}, 96), generic_group_type(5, 32, true));
  EXPECT_FALSE(generic_storage_type({3, 0, false}, 100).has_value());
}

// The grids the quantizers fit are stored bit-exactly: dequantize_row of the encoded matrix gives
// QuantizedMatrix::values, per group and per channel, for both fits.
TEST(GenericGroup, FittedGridsDecodeBitExactly) {
  std::mt19937 rng(4);
  const int64_t rows = 3;
  for (int64_t cols : {int64_t{512}, int64_t{384}}) {
    std::vector<float> w, importance(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> row = random_row(cols, rng);
      w.insert(w.end(), row.begin(), row.end());
    }
    std::lognormal_distribution<float> lognormal(0.0f, 1.0f);
    for (float& v : importance) v = lognormal(rng);
    for (bool symmetric : {false, true}) {
      for (int bits = 2; bits <= 8; ++bits) {
        for (int64_t group : {int64_t{32}, int64_t{64}, int64_t{128}, int64_t{256}, int64_t{0}}) {
          if (cols % (group > 0 ? group : 1) != 0) continue;
          const QuantTarget target = QuantTarget::generic_grid(bits, group, symmetric);
          for (GridFit fit : {GridFit::kMinMax, GridFit::kSearch}) {
            SCOPED_TRACE(target.name() + (fit == GridFit::kSearch ? " search" : " minmax") + " cols " +
                         std::to_string(cols));
            const QuantizedMatrix m = compress::quantize_matrix(target, w.data(), rows, cols, importance.data(), fit);
            const std::optional<DType> type = compress::generic_storage_type(target.generic, cols);
            ASSERT_TRUE(type.has_value());
            const TypeTraits& t = type_traits(*type);
            ASSERT_EQ(m.row_bytes, row_bytes(t, cols));
            ASSERT_EQ(m.data, compress::encode_generic_matrix(m));
            std::vector<float> decoded(m.values.size());
            for (int64_t r = 0; r < rows; ++r) {
              t.dequantize_row(m.data.data() + r * m.row_bytes, decoded.data() + r * cols, cols);
            }
            ASSERT_EQ(std::memcmp(decoded.data(), m.values.data(), decoded.size() * sizeof(float)), 0);
            // The min/max fit of a stored group size is exactly the traits' round-to-nearest.
            if (fit == GridFit::kMinMax && group > 0) {
              std::vector<uint8_t> rtn(m.data.size());
              for (int64_t r = 0; r < rows; ++r) t.quantize_row(w.data() + r * cols, rtn.data() + r * m.row_bytes, cols);
              EXPECT_EQ(m.data, rtn);
            }
          }
        }
      }
    }
  }
  // Group lengths no stored type has keep their codes and grids but no encoding.
  const std::vector<float> row = random_row(500, rng);
  const QuantizedMatrix m = compress::quantize_matrix(QuantTarget::generic_grid(3, 100, false), row.data(), 1, 500,
                                                      nullptr, GridFit::kSearch);
  EXPECT_TRUE(m.data.empty());
  EXPECT_EQ(m.row_bytes, 0u);
  EXPECT_EQ(m.grids.size(), 5u);
}

TEST(GenericGroup, GptqResultDecodesBitExactly) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t rows = 4, cols = 256, tokens = 512;
  std::vector<float> w;
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row = random_row(cols, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (float& v : x) v = normal(rng);
  std::vector<double> hessian(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        hessian[static_cast<size_t>(i * cols + j)] +=
            static_cast<double>(x[static_cast<size_t>(t * cols + i)]) * x[static_cast<size_t>(t * cols + j)];
      }
    }
  }
  for (const QuantTarget& target : {QuantTarget::generic_grid(3, 128, false), QuantTarget::generic_grid(4, 0, true)}) {
    SCOPED_TRACE(target.name());
    auto result = compress::gptq_quantize(w.data(), rows, cols, hessian.data(), target);
    ASSERT_TRUE(result.is_ok()) << result.status().message();
    const QuantizedMatrix& m = result->quantized;
    const TypeTraits& t = type_traits(*compress::generic_storage_type(target.generic, cols));
    ASSERT_EQ(m.data.size(), row_bytes(t, cols) * rows);
    std::vector<float> decoded(m.values.size());
    for (int64_t r = 0; r < rows; ++r) t.dequantize_row(m.data.data() + r * m.row_bytes, decoded.data() + r * cols, cols);
    EXPECT_EQ(std::memcmp(decoded.data(), m.values.data(), decoded.size() * sizeof(float)), 0);
  }
}

TEST(GenericGroup, LoadsFromGguf) {
  std::mt19937 rng(6);
  const DType type = *generic_group_type(3, 128, false);
  const TypeTraits& t = type_traits(type);
  const int64_t cols = 256, rows = 3;
  std::vector<float> w;
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row = random_row(cols, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  std::vector<uint8_t> bytes(row_bytes(t, cols) * rows);
  for (int64_t r = 0; r < rows; ++r) t.quantize_row(w.data() + r * cols, bytes.data() + r * row_bytes(t, cols), cols);

  GgufWriter writer;
  writer.set_string("general.architecture", "test");
  writer.add_tensor("weight", type, {cols, rows}, bytes);
  const std::string path = testing::temp_dir() + "/generic.gguf";
  ASSERT_TRUE(writer.write(path).is_ok());
  auto file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().message();
  const GgufTensorInfo* info = (*file)->find_tensor("weight");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->type_id, static_cast<uint32_t>(type));
  EXPECT_EQ(info->traits, &t);
  ASSERT_EQ(info->bytes, bytes.size());
  EXPECT_EQ(std::memcmp(info->data, bytes.data(), bytes.size()), 0);

  // A row length that is not a whole number of groups is rejected, naming the type.
  GgufWriter bad;
  bad.add_tensor("weight", type, {64, 1}, std::vector<uint8_t>(t.block_bytes / 2));
  const std::string bad_path = testing::temp_dir() + "/generic_bad.gguf";
  ASSERT_TRUE(bad.write(bad_path).is_ok());
  auto rejected = GgufFile::open(bad_path);
  ASSERT_FALSE(rejected.is_ok());
  EXPECT_NE(rejected.status().message().find("fq3_g128"), std::string::npos) << rejected.status().message();
}

}  // namespace
}  // namespace frugal
