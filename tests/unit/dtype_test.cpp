// Unit tests of the weight-format traits table: GGML block sizes and names, decoding of hand-built
// blocks against the format formulas (ggml-common.h layouts), round-trip error, and dot products.
#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tensor/fp16.h"

namespace frugal {
namespace {

using Bytes = std::vector<uint8_t>;

// Writes an IEEE half at a byte offset (little-endian, as GGUF stores it). Only values exactly
// representable in half precision are used, so expected results can be computed exactly.
void put_half(Bytes& bytes, size_t offset, float value) {
  const uint16_t h = float_to_fp16(value);
  ASSERT_EQ(fp16_to_float(h), value) << "test value not exact in half precision";
  bytes[offset] = static_cast<uint8_t>(h & 0xff);
  bytes[offset + 1] = static_cast<uint8_t>(h >> 8);
}

std::vector<float> decode(DType type, const Bytes& bytes) {
  const TypeTraits& t = type_traits(type);
  EXPECT_EQ(bytes.size() % t.block_bytes, 0u);
  const int64_t n = static_cast<int64_t>(bytes.size() / t.block_bytes) * t.block_size;
  std::vector<float> out(static_cast<size_t>(n), -12345.0f);
  t.dequantize_row(bytes.data(), out.data(), n);
  return out;
}

void expect_all_eq(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FLOAT_EQ(got[i], want[i]) << "element " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// Table: sizes, ids, names.

TEST(DTypeTraits, BlockSizesAndBytesMatchGgml) {
  struct Expected {
    DType type;
    uint32_t id;
    const char* name;
    int64_t block_size;
    size_t block_bytes;
  };
  const Expected expected[] = {
      {DType::F32, 0, "f32", 1, 4},         {DType::F16, 1, "f16", 1, 2},
      {DType::Q4_0, 2, "q4_0", 32, 18},     {DType::Q4_1, 3, "q4_1", 32, 20},
      {DType::Q5_0, 6, "q5_0", 32, 22},     {DType::Q5_1, 7, "q5_1", 32, 24},
      {DType::Q8_0, 8, "q8_0", 32, 34},     {DType::Q8_1, 9, "q8_1", 32, 36},
      {DType::Q2_K, 10, "q2_K", 256, 84},   {DType::Q3_K, 11, "q3_K", 256, 110},
      {DType::Q4_K, 12, "q4_K", 256, 144},  {DType::Q5_K, 13, "q5_K", 256, 176},
      {DType::Q6_K, 14, "q6_K", 256, 210},  {DType::Q8_K, 15, "q8_K", 256, 292},
      {DType::BF16, 30, "bf16", 1, 2},
  };
  for (const Expected& e : expected) {
    SCOPED_TRACE(e.name);
    const TypeTraits* t = find_type_traits(e.id);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t, &type_traits(e.type));
    EXPECT_EQ(static_cast<uint32_t>(t->type), e.id);
    EXPECT_STREQ(t->name, e.name);
    EXPECT_EQ(ggml_type_name(e.id), e.name);
    EXPECT_EQ(t->block_size, e.block_size);
    EXPECT_EQ(t->block_bytes, e.block_bytes);
    EXPECT_NE(t->dequantize_row, nullptr);
    EXPECT_NE(t->quantize_row, nullptr);
    EXPECT_NE(t->dot_f32, nullptr);
  }
  EXPECT_EQ(row_bytes(type_traits(DType::Q4_K), 4096), 16u * 144u);
  EXPECT_EQ(row_bytes(type_traits(DType::F16), 10), 20u);
}

TEST(DTypeTraits, UnknownIdsHaveNoTraits) {
  for (uint32_t id : {4u, 5u, 16u, 20u, 23u, 24u, 28u, 31u, 39u, 200u, 0xffffffffu}) {
    EXPECT_EQ(find_type_traits(id), nullptr) << "id " << id;
  }
}

TEST(DTypeTraits, NamesForUnsupportedIds) {
  EXPECT_NE(ggml_type_name(4).find("q4_2"), std::string_view::npos);
  EXPECT_NE(ggml_type_name(4).find("removed"), std::string_view::npos);
  EXPECT_NE(ggml_type_name(5).find("q4_3"), std::string_view::npos);
  EXPECT_EQ(ggml_type_name(16), "iq2_xxs");
  EXPECT_EQ(ggml_type_name(23), "iq4_xs");
  EXPECT_EQ(ggml_type_name(28), "f64");
  EXPECT_EQ(ggml_type_name(35), "tq2_0");
  EXPECT_EQ(ggml_type_name(39), "mxfp4");
  EXPECT_EQ(ggml_type_name(200), "type 200");
  EXPECT_EQ(ggml_type_name(200).data(), ggml_type_name(200).data()) << "views must stay valid";
  EXPECT_FALSE(ggml_type_name(0xffffffffu).empty());
}

// ---------------------------------------------------------------------------------------------
// Decoding hand-built blocks. Each test picks codes and scales, packs them into bytes following
// the ggml-common.h layout description (byte offsets written out here, not taken from frugal's
// structs), and compares against the format formula evaluated on the chosen codes.

TEST(QuantDecode, F32F16BF16) {
  const float f32_values[] = {1.5f, -0.0f, 3.0e-39f, -7.25e10f};
  Bytes f32(sizeof(f32_values));
  std::memcpy(f32.data(), f32_values, sizeof(f32_values));
  expect_all_eq(decode(DType::F32, f32), {1.5f, -0.0f, 3.0e-39f, -7.25e10f});

  // IEEE binary16 bit patterns: 1, -2, largest finite, smallest subnormal, 1/3 rounded.
  const Bytes f16 = {0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x55, 0x35};
  expect_all_eq(decode(DType::F16, f16),
                {1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), 0.333251953125f});

  // bfloat16 is the top half of a float32: 1, -3, 3.140625, 2^-126.
  const Bytes bf16 = {0x80, 0x3f, 0x40, 0xc0, 0x49, 0x40, 0x80, 0x00};
  expect_all_eq(decode(DType::BF16, bf16), {1.0f, -3.0f, 3.140625f, std::ldexp(1.0f, -126)});
}

// Q4_0: 18 bytes {half d; uint8 qs[16]}; element j < 16 is the low nibble of qs[j], element
// j + 16 the high nibble; x = d * (q - 8).
TEST(QuantDecode, Q4_0) {
  const float d[2] = {0.5f, -1.25f};
  Bytes bytes(2 * 18, 0);
  std::vector<float> want(64);
  for (int b = 0; b < 2; ++b) {
    put_half(bytes, 18 * b, d[b]);
    for (int e = 0; e < 32; ++e) {
      const int q = (e * 7 + 3 * b + 1) % 16;
      bytes[18 * b + 2 + e % 16] |= static_cast<uint8_t>(e < 16 ? q : q << 4);
      want[32 * b + e] = d[b] * static_cast<float>(q - 8);
    }
  }
  expect_all_eq(decode(DType::Q4_0, bytes), want);
}

// Q4_1: 20 bytes {half d; half m; uint8 qs[16]}; x = d * q + m.
TEST(QuantDecode, Q4_1) {
  const float d[2] = {0.25f, 3.0f}, m[2] = {-1.5f, 0.125f};
  Bytes bytes(2 * 20, 0);
  std::vector<float> want(64);
  for (int b = 0; b < 2; ++b) {
    put_half(bytes, 20 * b, d[b]);
    put_half(bytes, 20 * b + 2, m[b]);
    for (int e = 0; e < 32; ++e) {
      const int q = (e * 5 + b) % 16;
      bytes[20 * b + 4 + e % 16] |= static_cast<uint8_t>(e < 16 ? q : q << 4);
      want[32 * b + e] = d[b] * static_cast<float>(q) + m[b];
    }
  }
  expect_all_eq(decode(DType::Q4_1, bytes), want);
}

// Q5_0: 22 bytes {half d; uint8 qh[4]; uint8 qs[16]}; bit 4 of element e is bit e of qh read as
// a little-endian uint32; x = d * (q - 16).
TEST(QuantDecode, Q5_0) {
  const float d = 0.75f;
  Bytes bytes(22, 0);
  put_half(bytes, 0, d);
  std::vector<float> want(32);
  for (int e = 0; e < 32; ++e) {
    const int q = (e * 11 + 5) % 32;
    bytes[6 + e % 16] |= static_cast<uint8_t>(e < 16 ? (q & 15) : (q & 15) << 4);
    if (q & 16) bytes[2 + e / 8] |= static_cast<uint8_t>(1 << (e % 8));
    want[e] = d * static_cast<float>(q - 16);
  }
  expect_all_eq(decode(DType::Q5_0, bytes), want);
}

TEST(QuantDecode, Q5_0HighBitOrder) {
  // Only bit 16 of qh set (byte 2 of qh, bit 0): it belongs to element 16 (the high nibble of
  // qs[0]), not to element 0 and not to element 1.
  Bytes bytes(22, 0);
  put_half(bytes, 0, 1.0f);
  bytes[2 + 2] = 0x01;
  const std::vector<float> y = decode(DType::Q5_0, bytes);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(y[e], e == 16 ? 0.0f : -16.0f) << "element " << e;
  // And bit 31 (top bit of byte 3) is element 31.
  bytes[4] = 0;
  bytes[5] = 0x80;
  const std::vector<float> z = decode(DType::Q5_0, bytes);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(z[e], e == 31 ? 0.0f : -16.0f) << "element " << e;
}

// Q5_1: 24 bytes {half d; half m; uint8 qh[4]; uint8 qs[16]}; x = d * q + m.
TEST(QuantDecode, Q5_1) {
  const float d = 0.125f, m = -2.0f;
  Bytes bytes(24, 0);
  put_half(bytes, 0, d);
  put_half(bytes, 2, m);
  std::vector<float> want(32);
  for (int e = 0; e < 32; ++e) {
    const int q = (e * 13 + 7) % 32;
    bytes[8 + e % 16] |= static_cast<uint8_t>(e < 16 ? (q & 15) : (q & 15) << 4);
    if (q & 16) bytes[4 + e / 8] |= static_cast<uint8_t>(1 << (e % 8));
    want[e] = d * static_cast<float>(q) + m;
  }
  expect_all_eq(decode(DType::Q5_1, bytes), want);

  // High bit only for element 17 (qh bit 17 = byte 2 bit 1): 16 * d + m there, m elsewhere.
  Bytes single(24, 0);
  put_half(single, 0, d);
  put_half(single, 2, m);
  single[4 + 2] = 0x02;
  const std::vector<float> y = decode(DType::Q5_1, single);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(y[e], e == 17 ? 16 * d + m : m) << "element " << e;
}

// Q8_0: 34 bytes {half d; int8 qs[32]}; Q8_1: 36 bytes {half d; half s; int8 qs[32]}; x = d * q.
TEST(QuantDecode, Q8_0AndQ8_1) {
  const float d = -0.375f;
  Bytes q8_0(34, 0), q8_1(36, 0);
  put_half(q8_0, 0, d);
  put_half(q8_1, 0, d);
  put_half(q8_1, 2, 99.0f);  // the sum field does not take part in decoding
  std::vector<float> want(32);
  for (int e = 0; e < 32; ++e) {
    const int q = e == 0 ? -128 : (e == 1 ? 127 : (e * 9) % 255 - 127);
    q8_0[2 + e] = static_cast<uint8_t>(static_cast<int8_t>(q));
    q8_1[4 + e] = static_cast<uint8_t>(static_cast<int8_t>(q));
    want[e] = d * static_cast<float>(q);
  }
  expect_all_eq(decode(DType::Q8_0, q8_0), want);
  expect_all_eq(decode(DType::Q8_1, q8_1), want);
}

// K-quant element order shared by Q2_K, Q3_K and Q6_K: element e = 128*h + 32*k + l.
struct KPos {
  int h, k, l;
};
KPos kpos(int e) { return {e / 128, (e % 128) / 32, e % 32}; }

// Q2_K: 84 bytes {uint8 scales[16]; uint8 qs[64]; half d; half dmin}. Sub-block i = e / 16 has
// scale code scales[i] & 15 and min code scales[i] >> 4; the 2-bit code of e sits in bits 2k of
// qs[32h + l]; x = d * sc * q - dmin * m.
TEST(QuantDecode, Q2_K) {
  const float d = 0.5f, dmin = 0.25f;
  Bytes bytes(84, 0);
  put_half(bytes, 80, d);
  put_half(bytes, 82, dmin);
  int sc[16], m[16];
  for (int i = 0; i < 16; ++i) {
    sc[i] = (i * 5 + 1) % 16;
    m[i] = (15 - i * 3 + 48) % 16;
    bytes[i] = static_cast<uint8_t>(sc[i] | (m[i] << 4));
  }
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int q = (e * 3 + e / 7) % 4;
    const KPos p = kpos(e);
    bytes[16 + 32 * p.h + p.l] |= static_cast<uint8_t>(q << (2 * p.k));
    want[e] = d * static_cast<float>(sc[e / 16] * q) - dmin * static_cast<float>(m[e / 16]);
  }
  expect_all_eq(decode(DType::Q2_K, bytes), want);
}

// Q3_K: 110 bytes {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d}. Low 2 bits as in
// Q2_K; bit 4h + k of hmask[l] set means q = low, clear means q = low - 4; x = d * (u - 32) * q
// where u is the 6-bit scale code of sub-block e / 16.
TEST(QuantDecode, Q3_K) {
  const float d = 0.5f;
  Bytes bytes(110, 0);
  put_half(bytes, 108, d);
  int u[16];
  for (int i = 0; i < 16; ++i) {
    u[i] = (i * 23 + 5) % 64;
    // Low nibble of u_i: byte i (i < 8) low nibble, byte i - 8 (i >= 8) high nibble; high 2
    // bits: byte 8 + i % 4, bits 2 * (i / 4).
    bytes[64 + 32 + (i % 8)] |= static_cast<uint8_t>(i < 8 ? (u[i] & 15) : (u[i] & 15) << 4);
    bytes[64 + 32 + 8 + i % 4] |= static_cast<uint8_t>((u[i] >> 4) << (2 * (i / 4)));
  }
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int q = (e * 5 + 2) % 8 - 4;  // in [-4, 3]
    const int low = q >= 0 ? q : q + 4;
    const bool high = q >= 0;
    const KPos p = kpos(e);
    bytes[32 + 32 * p.h + p.l] |= static_cast<uint8_t>(low << (2 * p.k));
    if (high) bytes[p.l] |= static_cast<uint8_t>(1 << (4 * p.h + p.k));
    want[e] = d * static_cast<float>((u[e / 16] - 32) * q);
  }
  expect_all_eq(decode(DType::Q3_K, bytes), want);
}

TEST(QuantDecode, Q3_KScalePackingByHand) {
  // Every code is q = 1 (low bits 01, high bit set), so each output is d * (u - 32).
  Bytes bytes(110, 0);
  put_half(bytes, 108, 1.0f);
  for (int l = 0; l < 32; ++l) bytes[l] = 0xff;
  for (int j = 0; j < 64; ++j) bytes[32 + j] = 0x55;
  const uint8_t scales[12] = {
      0x21, 0x00, 0x0f, 0xf0, 0x00, 0x00, 0x00, 0x00,  // low nibbles of u0..u7 / u8..u15
      0xe4, 0x00, 0x03, 0xc0,                          // high 2-bit pairs
  };
  std::memcpy(bytes.data() + 96, scales, 12);
  // byte 8 = 0b11'10'01'00 holds the high pairs of u0, u4, u8, u12 (bits 0-1, 2-3, 4-5, 6-7);
  // byte 10 = 0x03 those of u2 (bits 0-1); byte 11 = 0xc0 those of u15 (bits 6-7).
  // u0 = 1 | 0 << 4 = 1        u8 = 2 | 2 << 4 = 34       (byte 0 = 0x21)
  // u4 = 0 | 1 << 4 = 16       u12 = 0 | 3 << 4 = 48
  // u2 = 15 | 3 << 4 = 63      u10 = 0                    (byte 2 = 0x0f)
  // u3 = 0                     u11 = 15 | 0 << 4 = 15     (byte 3 = 0xf0)
  // u15 = 0 | 3 << 4 = 48, all others 0.
  int u[16] = {};
  u[0] = 1, u[8] = 34, u[4] = 16, u[12] = 48, u[2] = 63, u[11] = 15, u[15] = 48;
  const std::vector<float> y = decode(DType::Q3_K, bytes);
  for (int e = 0; e < 256; ++e) {
    ASSERT_EQ(y[e], static_cast<float>(u[e / 16] - 32)) << "element " << e;
  }
}

TEST(QuantDecode, Q3_KHighBitMask) {
  // Scales all u = 33 (scale +1), low bits all 0: q is 0 where the hmask bit is set, -4 elsewhere.
  Bytes bytes(110, 0);
  put_half(bytes, 108, 1.0f);
  for (int i = 0; i < 8; ++i) bytes[96 + i] = 0x11;  // low nibbles 1 for u0..u15
  for (int i = 0; i < 4; ++i) bytes[96 + 8 + i] = 0xaa;  // high pairs 0b10 for all
  bytes[7] = 0x01 | 0x20;  // hmask[7]: bit 0 -> element 7, bit 5 (h=1, k=1) -> element 167
  const std::vector<float> y = decode(DType::Q3_K, bytes);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], (e == 7 || e == 167) ? 0.0f : -4.0f) << "element " << e;
  }
}

// Q4_K / Q5_K 6-bit scales and mins of sub-block j (get_scale_min_k4 in ggml-quants.c).
struct ScaleMin {
  int sc[8], m[8];
};

// The test's own packing of 8 scales and 8 mins into 12 bytes, from the layout description:
// j < 4: byte j low 6 bits = sc_j, byte j+4 low 6 bits = m_j; j >= 4: byte j+4 = (sc_j & 15) |
// (m_j & 15) << 4, and the top 2 bits of sc_j / m_j go to bits 6..7 of byte j-4 / byte j.
void pack_scale_min(const ScaleMin& s, uint8_t* out) {
  std::memset(out, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      out[j] |= static_cast<uint8_t>(s.sc[j]);
      out[j + 4] |= static_cast<uint8_t>(s.m[j]);
    } else {
      out[j + 4] = static_cast<uint8_t>((s.sc[j] & 15) | ((s.m[j] & 15) << 4));
      out[j - 4] |= static_cast<uint8_t>((s.sc[j] >> 4) << 6);
      out[j] |= static_cast<uint8_t>((s.m[j] >> 4) << 6);
    }
  }
}

// Q4_K: 144 bytes {half d; half dmin; uint8 scales[12]; uint8 qs[128]}; element 64p + l (l < 32)
// is the low nibble of qs[32p + l], element 64p + 32 + l the high one; x = d*sc*q - dmin*m.
TEST(QuantDecode, Q4_K) {
  const float d = 0.5f, dmin = 0.25f;
  Bytes bytes(144, 0);
  put_half(bytes, 0, d);
  put_half(bytes, 2, dmin);
  ScaleMin s;
  for (int j = 0; j < 8; ++j) {
    s.sc[j] = (j * 19 + 7) % 64;
    s.m[j] = (j * 29 + 60) % 64;
  }
  pack_scale_min(s, bytes.data() + 4);
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int q = (e * 7 + e / 32) % 16;
    const int p = e / 64, l = e % 32;
    bytes[16 + 32 * p + l] |= static_cast<uint8_t>((e % 64) < 32 ? q : q << 4);
    want[e] = d * static_cast<float>(s.sc[e / 32] * q) - dmin * static_cast<float>(s.m[e / 32]);
  }
  expect_all_eq(decode(DType::Q4_K, bytes), want);
}

TEST(QuantDecode, Q4_KScalePackingByHand) {
  // Twelve scale bytes written out by hand; every code is q = 1, so sub-block j decodes to
  // d * sc_j - dmin * m_j.
  Bytes bytes(144, 0);
  put_half(bytes, 0, 0.5f);
  put_half(bytes, 2, 0.25f);
  const uint8_t scales[12] = {0x45, 0x8a, 0xff, 0x00, 0x41, 0x02,
                              0x83, 0xc4, 0x73, 0x0f, 0x91, 0xe6};
  std::memcpy(bytes.data() + 4, scales, 12);
  for (int i = 0; i < 128; ++i) bytes[16 + i] = 0x11;
  // sc0..3 = low 6 bits of bytes 0..3 = 5, 10, 63, 0
  // m0..3 = low 6 bits of bytes 4..7 = 1, 2, 3, 4
  // sc4 = 0x3 | (byte0 >> 6 = 1) << 4 = 19     m4 = 0x7 | (byte4 >> 6 = 1) << 4 = 23
  // sc5 = 0xf | (byte1 >> 6 = 2) << 4 = 47     m5 = 0x0 | (byte5 >> 6 = 0) << 4 = 0
  // sc6 = 0x1 | (byte2 >> 6 = 3) << 4 = 49     m6 = 0x9 | (byte6 >> 6 = 2) << 4 = 41
  // sc7 = 0x6 | (byte3 >> 6 = 0) << 4 = 6      m7 = 0xe | (byte7 >> 6 = 3) << 4 = 62
  const int sc[8] = {5, 10, 63, 0, 19, 47, 49, 6};
  const int m[8] = {1, 2, 3, 4, 23, 0, 41, 62};
  const std::vector<float> y = decode(DType::Q4_K, bytes);
  for (int e = 0; e < 256; ++e) {
    ASSERT_EQ(y[e], 0.5f * static_cast<float>(sc[e / 32]) - 0.25f * static_cast<float>(m[e / 32]))
        << "element " << e;
  }
  // The same bytes drive Q5_K's scales (same 12-byte field at the same offset).
  Bytes q5(176, 0);
  std::memcpy(q5.data(), bytes.data(), 16);
  for (int i = 0; i < 128; ++i) q5[48 + i] = 0x11;
  const std::vector<float> z = decode(DType::Q5_K, q5);
  for (int e = 0; e < 256; ++e) ASSERT_EQ(z[e], y[e]) << "element " << e;
}

// Q5_K: 176 bytes {half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}; low
// nibbles as Q4_K, the fifth bit of element 64p + l is bit 2p of qh[l] and of element
// 64p + 32 + l bit 2p + 1.
TEST(QuantDecode, Q5_K) {
  const float d = 0.25f, dmin = 0.5f;
  Bytes bytes(176, 0);
  put_half(bytes, 0, d);
  put_half(bytes, 2, dmin);
  ScaleMin s;
  for (int j = 0; j < 8; ++j) {
    s.sc[j] = 63 - (j * 13) % 64;
    s.m[j] = (j * 17 + 3) % 64;
  }
  pack_scale_min(s, bytes.data() + 4);
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int q = (e * 11 + e / 64) % 32;
    const int p = e / 64, l = e % 32;
    const bool second_half = (e % 64) >= 32;
    bytes[48 + 32 * p + l] |= static_cast<uint8_t>(second_half ? (q & 15) << 4 : (q & 15));
    if (q & 16) bytes[16 + l] |= static_cast<uint8_t>(1 << (2 * p + (second_half ? 1 : 0)));
    want[e] = d * static_cast<float>(s.sc[e / 32] * q) - dmin * static_cast<float>(s.m[e / 32]);
  }
  expect_all_eq(decode(DType::Q5_K, bytes), want);
}

TEST(QuantDecode, Q5_KHighBits) {
  // All scales 1, mins 0, low nibbles 0: only elements whose qh bit is set decode to 16 * d.
  Bytes bytes(176, 0);
  put_half(bytes, 0, 2.0f);
  ScaleMin s;
  for (int j = 0; j < 8; ++j) s.sc[j] = 1, s.m[j] = 0;
  pack_scale_min(s, bytes.data() + 4);
  bytes[16 + 3] = 0x04;  // qh[3] bit 2: p = 1, first half -> element 64 + 3 = 67
  bytes[16 + 5] = 0x80;  // qh[5] bit 7: p = 3, second half -> element 192 + 32 + 5 = 229
  const std::vector<float> y = decode(DType::Q5_K, bytes);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], (e == 67 || e == 229) ? 32.0f : 0.0f) << "element " << e;
  }
}

// Q6_K: 210 bytes {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d}. Element
// 128h + 32k + l: low 4 bits in nibble k / 2 of ql[64h + 32(k % 2) + l], high 2 bits in bits 2k
// of qh[32h + l]; x = d * scales[e / 16] * (q - 32).
TEST(QuantDecode, Q6_K) {
  const float d = 0.5f;
  Bytes bytes(210, 0);
  put_half(bytes, 208, d);
  int sc[16];
  for (int i = 0; i < 16; ++i) {
    sc[i] = i == 0 ? -128 : (i == 1 ? 127 : (i * 37) % 200 - 100);
    bytes[192 + i] = static_cast<uint8_t>(static_cast<int8_t>(sc[i]));
  }
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int q = (e * 29 + 11) % 64;
    const KPos p = kpos(e);
    bytes[64 * p.h + 32 * (p.k % 2) + p.l] |= static_cast<uint8_t>((q & 15) << (4 * (p.k / 2)));
    bytes[128 + 32 * p.h + p.l] |= static_cast<uint8_t>((q >> 4) << (2 * p.k));
    want[e] = d * static_cast<float>(sc[e / 16] * (q - 32));
  }
  expect_all_eq(decode(DType::Q6_K, bytes), want);
}

TEST(QuantDecode, Q6_KHighBits) {
  // All codes 0 (value -32) except element 197 = 128 + 64 + 5 (h = 1, k = 2, l = 5): high nibble of
  // ql[69] = 10 and bits 4..5 of qh[37] = 3, so q = 10 + 48 = 58. Sub-block 12 has scale -3.
  Bytes bytes(210, 0);
  put_half(bytes, 208, 0.5f);
  for (int i = 0; i < 16; ++i) bytes[192 + i] = 1;
  bytes[192 + 12] = static_cast<uint8_t>(static_cast<int8_t>(-3));
  bytes[69] = 0xa0;
  bytes[128 + 37] = 0x30;
  const std::vector<float> y = decode(DType::Q6_K, bytes);
  for (int e = 0; e < 256; ++e) {
    const float scale = 0.5f * (e / 16 == 12 ? -3.0f : 1.0f);
    EXPECT_EQ(y[e], scale * (e == 197 ? 26.0f : -32.0f)) << "element " << e;
  }
}

// Q8_K: 292 bytes {float d; int8 qs[256]; int16 bsums[16]}; x = d * q.
TEST(QuantDecode, Q8_K) {
  const float d = 0.0078125f;
  Bytes bytes(292, 0);
  std::memcpy(bytes.data(), &d, 4);
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int q = e - 128;
    bytes[4 + e] = static_cast<uint8_t>(static_cast<int8_t>(q));
    want[e] = d * static_cast<float>(q);
  }
  expect_all_eq(decode(DType::Q8_K, bytes), want);
}

// ---------------------------------------------------------------------------------------------
// Encoders: round trip on random data, extra fields, and dot products.

struct TypeCase {
  DType type;
  double max_relative_rms;  // bound on ||dequantize(quantize(x)) - x|| / ||x|| for N(0, 1) data
};

std::string case_name(const testing::TestParamInfo<TypeCase>& info) {
  return std::string(type_traits(info.param.type).name);
}

// Rows of normally distributed values, with blocks of very different magnitude and one block of
// all-positive and one of all-negative values (exercising the min/offset paths).
std::vector<float> random_row(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t chunk = i / 256;
    const float magnitude = chunk % 3 == 1 ? 0.01f : (chunk % 3 == 2 ? 40.0f : 1.0f);
    x[i] = magnitude * normal(rng);
  }
  for (int64_t i = 0; i < 64 && i < n; ++i) x[i] = std::fabs(x[i]) + 0.5f;
  for (int64_t i = 64; i < 128 && i < n; ++i) x[i] = -std::fabs(x[i]) - 0.5f;
  return x;
}

class QuantRoundTrip : public testing::TestWithParam<TypeCase> {};

TEST_P(QuantRoundTrip, RelativeRmsErrorWithinBound) {
  const TypeTraits& t = type_traits(GetParam().type);
  const int64_t n = 256 * 9;
  const std::vector<float> x = random_row(n, 1234);
  Bytes stored(row_bytes(t, n), 0xcd);
  t.quantize_row(x.data(), stored.data(), n);
  std::vector<float> y(n);
  t.dequantize_row(stored.data(), y.data(), n);
  // Judge each 256-element chunk against its own energy: the chunks differ in scale by 4000x.
  double worst = 0.0;
  for (int64_t c = 0; c < n / 256; ++c) {
    double err = 0.0, ref = 0.0;
    for (int64_t i = 256 * c; i < 256 * (c + 1); ++i) {
      err += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
      ref += double(x[i]) * x[i];
    }
    worst = std::max(worst, std::sqrt(err / ref));
  }
  EXPECT_LE(worst, GetParam().max_relative_rms) << t.name;
  RecordProperty("worst_relative_rms", std::to_string(worst));
}

TEST_P(QuantRoundTrip, ZerosStayZero) {
  const TypeTraits& t = type_traits(GetParam().type);
  const int64_t n = 512;
  const std::vector<float> x(n, 0.0f);
  Bytes stored(row_bytes(t, n), 0xcd);
  t.quantize_row(x.data(), stored.data(), n);
  std::vector<float> y(n, 1.0f);
  t.dequantize_row(stored.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], 0.0f) << "element " << i;
}

TEST_P(QuantRoundTrip, ReencodingIsStable) {
  // Decoded values lie on the format's grid, so encoding them again must reproduce them far more
  // closely than the first encoding reproduced the input.
  const TypeTraits& t = type_traits(GetParam().type);
  const int64_t n = 512;
  const std::vector<float> x = random_row(n, 77);
  Bytes stored(row_bytes(t, n)), again(row_bytes(t, n));
  t.quantize_row(x.data(), stored.data(), n);
  std::vector<float> y(n), z(n);
  t.dequantize_row(stored.data(), y.data(), n);
  t.quantize_row(y.data(), again.data(), n);
  t.dequantize_row(again.data(), z.data(), n);
  double err = 0.0, ref = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    err += (double(z[i]) - y[i]) * (double(z[i]) - y[i]);
    ref += double(y[i]) * y[i];
  }
  EXPECT_LE(std::sqrt(err / ref), 0.25 * GetParam().max_relative_rms) << t.name;
}

class QuantDot : public testing::TestWithParam<TypeCase> {};

TEST_P(QuantDot, MatchesDequantizeThenDot) {
  const TypeTraits& t = type_traits(GetParam().type);
  // Unblocked types also get a length that is not a multiple of the 64-element chunks.
  const int64_t n = t.block_size == 1 ? 1024 + 37 : 256 * 4;
  const std::vector<float> w = random_row(n, 99);
  const std::vector<float> x = random_row(n, 100);
  Bytes stored(row_bytes(t, n));
  t.quantize_row(w.data(), stored.data(), n);
  std::vector<float> decoded(n);
  t.dequantize_row(stored.data(), decoded.data(), n);
  double want = 0.0, magnitude = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    want += double(decoded[i]) * x[i];
    magnitude += std::fabs(double(decoded[i]) * x[i]);
  }
  const float got = t.dot_f32(stored.data(), x.data(), n);
  // Float accumulation over n terms: a few ulps of the sum of magnitudes.
  EXPECT_NEAR(got, want, 1e-5 * magnitude) << t.name;
  // Dot of a prefix of whole blocks uses only that prefix.
  const int64_t prefix = t.block_size == 1 ? 5 : t.block_size;
  double want_prefix = 0.0;
  for (int64_t i = 0; i < prefix; ++i) want_prefix += double(decoded[i]) * x[i];
  EXPECT_NEAR(t.dot_f32(stored.data(), x.data(), prefix), want_prefix,
              1e-5 * magnitude + 1e-6);
}

// Bounds are about 1.3x the worst chunk measured with these seeds, so a regression in an encoder
// (a lost bit, a wrong rounding) shows up while the choice of seed does not. For reference, a
// uniform quantizer with step s has RMS error s / sqrt(12): Q4_0 spends 16 levels on
// [-amax, amax] of 32 normals (amax ~ 2.1), giving ~0.08. The K-quant encoders here are simple
// min/max fits (not llama.cpp's searching ones), which shows most in Q2_K.
const TypeCase kCases[] = {
    {DType::F32, 0.0},     {DType::F16, 4e-4},    {DType::BF16, 3e-3},
    {DType::Q8_0, 0.008},  {DType::Q8_1, 0.008},  {DType::Q5_0, 0.065},
    {DType::Q5_1, 0.055},  {DType::Q4_0, 0.125},  {DType::Q4_1, 0.11},
    {DType::Q2_K, 0.45},   {DType::Q3_K, 0.21},   {DType::Q4_K, 0.11},
    {DType::Q5_K, 0.055},  {DType::Q6_K, 0.027},  {DType::Q8_K, 0.0125},
};

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantRoundTrip, testing::ValuesIn(kCases), case_name);
INSTANTIATE_TEST_SUITE_P(AllTypes, QuantDot, testing::ValuesIn(kCases), case_name);

TEST(QuantEncode, Q8_1StoresScaledSum) {
  const TypeTraits& t = type_traits(DType::Q8_1);
  const std::vector<float> x = random_row(64, 5);
  Bytes stored(row_bytes(t, 64));
  t.quantize_row(x.data(), stored.data(), 64);
  for (int b = 0; b < 2; ++b) {
    const uint8_t* block = stored.data() + 36 * b;
    const float d = fp16_to_float(static_cast<uint16_t>(block[0] | (block[1] << 8)));
    const float s = fp16_to_float(static_cast<uint16_t>(block[2] | (block[3] << 8)));
    int sum = 0;
    for (int e = 0; e < 32; ++e) sum += static_cast<int8_t>(block[4 + e]);
    const float want = d * static_cast<float>(sum);
    EXPECT_NEAR(s, want, 1e-3 * std::fabs(want) + 1e-6) << "block " << b;
  }
}

TEST(QuantEncode, Q8_KStoresGroupSums) {
  const TypeTraits& t = type_traits(DType::Q8_K);
  const std::vector<float> x = random_row(256, 6);
  Bytes stored(292);
  t.quantize_row(x.data(), stored.data(), 256);
  for (int g = 0; g < 16; ++g) {
    int sum = 0;
    for (int e = 0; e < 16; ++e) sum += static_cast<int8_t>(stored[4 + 16 * g + e]);
    int16_t bsum;
    std::memcpy(&bsum, stored.data() + 260 + 2 * g, 2);
    EXPECT_EQ(bsum, sum) << "group " << g;
  }
}

TEST(QuantEncode, ValuesOnTheGridAreExact) {
  // Q8_0 with d = 1/64 (exact in half): integers times d in [-127, 127] with the maximum present
  // must come back bit for bit; the same for Q4_0 with codes in [-8, 7] and d = -max/8.
  std::vector<float> x(32);
  for (int e = 0; e < 32; ++e) x[e] = static_cast<float>(e == 0 ? 127 : (e * 37) % 255 - 127) / 64;
  Bytes q8(34);
  type_traits(DType::Q8_0).quantize_row(x.data(), q8.data(), 32);
  expect_all_eq(decode(DType::Q8_0, q8), x);

  std::vector<float> v(32);
  for (int e = 0; e < 32; ++e) v[e] = 0.25f * static_cast<float>(e == 0 ? -8 : (e * 5) % 16 - 8);
  Bytes q4(18);
  type_traits(DType::Q4_0).quantize_row(v.data(), q4.data(), 32);
  expect_all_eq(decode(DType::Q4_0, q4), v);
}

}  // namespace
}  // namespace frugal
