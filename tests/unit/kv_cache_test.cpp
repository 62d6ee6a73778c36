// The quantized KV cache: q8_0/q4_0 row quantizers (round trip within half a step), attention on
// every K/V type pair against its scalar twin on every ISA, quantized attention against the f16
// path, refusal of unknown types / head sizes the blocks cannot tile, and the Hadamard head
// rotation (the Sylvester matrix, its own inverse, and why it is there: outliers).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/ops_kernels.h"
#include "kv/kv_cache.h"
#include "kv/kv_rotation.h"
#include "support/isa_scope.h"

namespace frugal {
namespace {

using testing::supported_isas;

std::vector<float> normal_values(int64_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> out(n);
  for (auto& x : out) x = normal(rng);
  return out;
}

constexpr KvType kTypes[] = {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0};

// Rows of `positions` x `n` floats stored in `type`.
std::vector<uint8_t> encode_rows(const std::vector<float>& x, int64_t positions, int64_t n, KvType type) {
  std::vector<uint8_t> out(static_cast<size_t>(positions * kv_row_bytes(type, n)));
  for (int64_t p = 0; p < positions; ++p) KvCache::store(x.data() + p * n, n, type, out.data() + p * kv_row_bytes(type, n));
  return out;
}

// Round-to-nearest: every element is within half a quantization step (d/2) of its value; q8_0's
// step is max|x|/127, q4_0's max|x|/8 (plus fp16 rounding of d, relative 2^-11 of the step range).
TEST(KvCache, BlockQuantizersRoundTrip) {
  std::mt19937 rng(5);
  const int64_t n = 128;
  const std::vector<float> x = normal_values(n, 3.0f, rng);
  for (KvType type : kTypes) {
    std::vector<uint8_t> row(static_cast<size_t>(kv_row_bytes(type, n)));
    std::vector<float> back(n);
    KvCache::store(x.data(), n, type, row.data());
    KvCache::load(row.data(), n, type, back.data());
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
      const float step = type == KvType::kF16 ? amax / 1024.0f : type == KvType::kQ8_0 ? amax / 127.0f : amax / 8.0f;
      for (int64_t i = 0; i < 32; ++i) {
        ASSERT_LE(std::fabs(back[b * 32 + i] - x[b * 32 + i]), 0.5f * step * 1.01f + 1e-6f) << kv_type_name(type) << " " << b * 32 + i;
      }
    }
  }
  EXPECT_EQ(kv_row_bytes(KvType::kQ8_0, 64), 68);
  EXPECT_EQ(kv_row_bytes(KvType::kQ4_0, 64), 36);
}

// Every (K type, V type) pair, key ranges across tiles, head offsets inside strided rows; the SIMD
// kernels dequantize the same integers with the same fp16 scale (and, for q8_0/q4_0 keys, dot them
// with the same 8-bit query, quantize_query_q8), so they match the double twin to float rounding
// of the scores (2e-5 as the f32/f16 twin test).
TEST(KvCache, QuantizedAttentionMatchesScalarTwin) {
  std::mt19937 rng(7);
  const std::pair<int64_t, int64_t> ranges[] = {{0, 0}, {0, 7}, {3, 70}, {0, 64}, {5, 150}};
  for (int64_t head_dim : {32, 64, 256}) {
    const int64_t heads = 2, n = heads * head_dim, positions = 151;
    const std::vector<float> q = normal_values(head_dim, 2.0f, rng);
    const std::vector<float> k = normal_values(positions * n, 1.0f, rng);
    const std::vector<float> v = normal_values(positions * n, 1.0f, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (KvType kt : kTypes) {
      for (KvType vt : kTypes) {
        const auto kb = encode_rows(k, positions, n, kt), vb = encode_rows(v, positions, n, vt);
        // Head 1 of each row (offset one head's bytes), as the decoder block addresses it.
        const KvRows kr{kb.data() + kv_row_bytes(kt, head_dim), kv_row_bytes(kt, n), kt};
        const KvRows vr{vb.data() + kv_row_bytes(vt, head_dim), kv_row_bytes(vt, n), vt};
        for (auto [first, last] : ranges) {
          std::vector<float> expected(head_dim);
          kernels::attend_reference(q.data(), kr, vr, first, last, head_dim, scale, expected.data());
          for (Isa isa : supported_isas()) {
            std::vector<float> out(head_dim, -7.0f);
            kernels::ops_table(isa).attend_kv(q.data(), kr, vr, first, last, head_dim, scale, out.data());
            for (int64_t d = 0; d < head_dim; ++d) {
              ASSERT_NEAR(out[d], expected[d], 2e-5) << isa_name(isa) << " K " << kv_type_name(kt) << " V " << kv_type_name(vt)
                                                     << " head_dim " << head_dim << " keys " << first << ".." << last;
            }
          }
        }
      }
    }
  }
}

// The 8-bit query of the integer Q.K: every element within half a step (d/2, d = max|q|/127 per
// block of 32) of its value, the block maximum exactly +-127, and an all-zero block stays zero.
TEST(KvCache, QueryQuantizerRoundTrip) {
  std::mt19937 rng(11);
  std::vector<float> q = normal_values(96, 2.0f, rng);
  std::fill(q.begin() + 64, q.end(), 0.0f);
  int8_t qi[96];
  float d[3];
  kernels::quantize_query_q8(q.data(), 96, qi, d);
  for (int64_t b = 0; b < 2; ++b) {
    int max_code = 0;
    for (int64_t i = 0; i < 32; ++i) {
      ASSERT_LE(std::fabs(d[b] * qi[32 * b + i] - q[32 * b + i]), 0.5f * d[b] * 1.001f) << 32 * b + i;
      max_code = std::max(max_code, std::abs(static_cast<int>(qi[32 * b + i])));
    }
    EXPECT_EQ(max_code, 127) << "block " << b;
  }
  EXPECT_EQ(d[2], 0.0f);
  for (int64_t i = 64; i < 96; ++i) EXPECT_EQ(qi[i], 0);
}

// The worst case of the integer Q.K: query and keys at full scale with matching signs, so every
// byte product is 127 * 127 and maddubs' pairs reach 32258 (just under int16's 32767); the
// kernels must agree with the double twin, so no pair saturates. Keys get a per-row magnitude so
// the softmax is not uniform.
TEST(KvCache, IntegerKeyDotDoesNotSaturate) {
  const int64_t head_dim = 64, positions = 40;
  std::vector<float> q(head_dim), k(positions * head_dim), v(positions * head_dim);
  for (int64_t i = 0; i < head_dim; ++i) q[i] = (i % 3 == 0 ? -1.0f : 1.0f) * 0.9f;
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < head_dim; ++i) {
      k[p * head_dim + i] = (i % 3 == 0 ? -1.0f : 1.0f) * (0.05f + 0.01f * static_cast<float>(p % 7));
      v[p * head_dim + i] = static_cast<float>((p * 7 + i) % 11) - 5.0f;
    }
  }
  for (KvType kt : {KvType::kQ8_0, KvType::kQ4_0}) {
    const auto kb = encode_rows(k, positions, head_dim, kt), vb = encode_rows(v, positions, head_dim, KvType::kF16);
    const KvRows kr{kb.data(), kv_row_bytes(kt, head_dim), kt}, vr{vb.data(), 2 * head_dim, KvType::kF16};
    std::vector<float> expected(head_dim);
    kernels::attend_reference(q.data(), kr, vr, 0, positions - 1, head_dim, 1.0f, expected.data());
    for (Isa isa : supported_isas()) {
      std::vector<float> out(head_dim, -7.0f);
      kernels::ops_table(isa).attend_kv(q.data(), kr, vr, 0, positions - 1, head_dim, 1.0f, out.data());
      for (int64_t d = 0; d < head_dim; ++d) ASSERT_NEAR(out[d], expected[d], 1e-4) << isa_name(isa) << " " << kv_type_name(kt) << " " << d;
    }
  }
}

// Quantized against f16 attention on the same data. The output is a convex combination of value
// rows (|v| ~ 1): q8_0's relative error (~1/254 of a block's max, ~3.5 sigma) moves scores and
// values by about 0.015; q4_0's (~1/16) by about 0.25. Stated bounds: mean |diff| < 0.01 (q8_0),
// < 0.1 (q4_0), with the f16 twin the reference.
TEST(KvCache, QuantizedAttentionIsCloseToF16) {
  std::mt19937 rng(9);
  const int64_t head_dim = 64, positions = 300;
  const std::vector<float> q = normal_values(head_dim, 1.0f, rng);
  const std::vector<float> k = normal_values(positions * head_dim, 1.0f, rng);
  const std::vector<float> v = normal_values(positions * head_dim, 1.0f, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const auto k16 = encode_rows(k, positions, head_dim, KvType::kF16), v16 = encode_rows(v, positions, head_dim, KvType::kF16);
  std::vector<float> base(head_dim);
  attend_one_head(q.data(), KvRows{k16.data(), 2 * head_dim, KvType::kF16}, KvRows{v16.data(), 2 * head_dim, KvType::kF16}, 0,
                  positions - 1, head_dim, scale, base.data());
  for (auto [type, bound] : {std::pair{KvType::kQ8_0, 0.01}, std::pair{KvType::kQ4_0, 0.1}}) {
    const auto kq = encode_rows(k, positions, head_dim, type), vq = encode_rows(v, positions, head_dim, type);
    std::vector<float> out(head_dim);
    attend_one_head(q.data(), KvRows{kq.data(), kv_row_bytes(type, head_dim), type},
                    KvRows{vq.data(), kv_row_bytes(type, head_dim), type}, 0, positions - 1, head_dim, scale, out.data());
    double mean = 0, spread = 0;
    for (int64_t d = 0; d < head_dim; ++d) mean += std::fabs(out[d] - base[d]) / head_dim, spread += std::fabs(base[d]) / head_dim;
    EXPECT_LT(mean, bound) << kv_type_name(type);
    EXPECT_GT(mean, 0.0) << kv_type_name(type) << ": quantization changed nothing";
    EXPECT_GT(spread, 0.01) << "degenerate attention output";
  }
}

TEST(KvCache, RefusesUnknownTypesAndUntileableHeads) {
  EXPECT_FALSE(parse_kv_type("q5_9").is_ok());
  EXPECT_NE(parse_kv_type("q5_9").status().message().find("q5_9"), std::string::npos);
  ASSERT_TRUE(parse_kv_type("q4_0").is_ok());
  EXPECT_EQ(*parse_kv_type("q4_0"), KvType::kQ4_0);
  EXPECT_FALSE(check_kv_type(KvType::kQ8_0, 16).is_ok());
  EXPECT_TRUE(check_kv_type(KvType::kF16, 16).is_ok());
  EXPECT_TRUE(check_kv_type(KvType::kQ4_0, 64).is_ok());
}

// The fast transform equals multiplying by the normalized Sylvester matrix, H_2n = [[H, H], [H, -H]]
// / sqrt(2), entry (i, j) = (-1)^popcount(i & j) / sqrt(n).
TEST(KvRotation, FastTransformIsTheNormalizedSylvesterMatrix) {
  std::mt19937 rng(7);
  for (int64_t n : {2, 8, 64}) {
    const std::vector<float> x = normal_values(n, 1.0f, rng);
    std::vector<float> fast = x;
    hadamard_transform(fast.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      double expected = 0;
      for (int64_t j = 0; j < n; ++j) expected += (__builtin_popcountll(i & j) % 2 ? -1.0 : 1.0) * x[j];
      EXPECT_NEAR(fast[i], expected / std::sqrt(static_cast<double>(n)), 1e-5) << "n " << n << " i " << i;
    }
    // Orthonormal and symmetric: applied twice it gives x back, and it keeps dot products.
    std::vector<float> twice = fast;
    hadamard_transform(twice.data(), n);
    double norm_x = 0, norm_fast = 0;
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(twice[i], x[i], 1e-5);
      norm_x += x[i] * x[i];
      norm_fast += fast[i] * fast[i];
    }
    EXPECT_NEAR(norm_fast, norm_x, 1e-4 * norm_x);
  }
}

TEST(KvRotation, AppliesToQuantizedTypesAndPowerOfTwoHeads) {
  EXPECT_FALSE(kv_rotation_applies(KvType::kF16, 64));
  EXPECT_TRUE(kv_rotation_applies(KvType::kQ8_0, 64));
  EXPECT_TRUE(kv_rotation_applies(KvType::kQ4_0, 256));
  EXPECT_FALSE(kv_rotation_applies(KvType::kQ4_0, 96));  // tiles q4_0 blocks, but no Sylvester matrix
}

// Why the rotation is there: a head with one outlier channel (as real keys have) loses most of its
// other channels to q4_0's block scale; rotated first, the outlier's energy is spread over the
// head and the round trip (rotate, quantize, dequantize, rotate back) is several times closer.
TEST(KvRotation, SpreadsAnOutlierBeforeBlockQuantization) {
  std::mt19937 rng(11);
  const int64_t head_dim = 64;
  double error_plain = 0, error_rotated = 0;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x = normal_values(head_dim, 1.0f, rng);
    x[trial % head_dim] = 40.0f;  // one massive channel
    for (KvType type : {KvType::kQ4_0}) {
      const std::vector<uint8_t> plain = encode_rows(x, 1, head_dim, type);
      std::vector<float> back(head_dim);
      KvCache::load(plain.data(), head_dim, type, back.data());
      std::vector<float> rotated = x;
      hadamard_transform(rotated.data(), head_dim);
      const std::vector<uint8_t> stored = encode_rows(rotated, 1, head_dim, type);
      std::vector<float> rotated_back(head_dim);
      KvCache::load(stored.data(), head_dim, type, rotated_back.data());
      hadamard_transform(rotated_back.data(), head_dim);
      for (int64_t i = 0; i < head_dim; ++i) {
        error_plain += (back[i] - x[i]) * (back[i] - x[i]);
        error_rotated += (rotated_back[i] - x[i]) * (rotated_back[i] - x[i]);
      }
    }
  }
  EXPECT_LT(error_rotated * 3, error_plain) << "rotated " << error_rotated << " plain " << error_plain;
}

}  // namespace
}  // namespace frugal
