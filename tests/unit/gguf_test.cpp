// GGUF reader and writer: every metadata kind round-trips, tensor data and alignment are exact,
// and a hand-assembled file (bytes written by the test itself) parses to the expected values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>

#include "io/gguf_writer.h"
#include "support/test_support.h"

namespace frugal {
namespace {

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_string(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}

TEST(Gguf, ParsesHandAssembledFile) {
  // Layout from the GGUF spec, assembled byte by byte: v3, 1 tensor, 4 kvs.
  std::string b;
  put<uint32_t>(b, 0x46554747);
  put<uint32_t>(b, 3);
  put<uint64_t>(b, 1);
  put<uint64_t>(b, 4);
  put_string(b, "a.u8");
  put<uint32_t>(b, 0);
  put<uint8_t>(b, 200);
  put_string(b, "a.i64");
  put<uint32_t>(b, 11);
  put<int64_t>(b, -1234567890123LL);
  put_string(b, "a.f64");
  put<uint32_t>(b, 12);
  put<double>(b, 2.5);
  put_string(b, "a.arr");
  put<uint32_t>(b, 9);
  put<uint32_t>(b, 5);  // int32 elements
  put<uint64_t>(b, 3);
  put<int32_t>(b, 7);
  put<int32_t>(b, -8);
  put<int32_t>(b, 9);
  put_string(b, "w");
  put<uint32_t>(b, 2);
  put<uint64_t>(b, 4);
  put<uint64_t>(b, 2);
  put<uint32_t>(b, 0);  // F32
  put<uint64_t>(b, 0);
  while (b.size() % 32) b += '\0';
  for (int i = 0; i < 8; ++i) put<float>(b, static_cast<float>(i) * 0.5f);
  const std::string path = testing::temp_dir() + "/hand.gguf";
  std::ofstream(path, std::ios::binary) << b;

  auto file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().message();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.find("a.u8")->uint_value, 200u);
  EXPECT_EQ(f.get_int("a.i64").value(), -1234567890123LL);
  EXPECT_DOUBLE_EQ(f.get_float("a.f64").value(), 2.5);
  EXPECT_EQ(f.find("a.arr")->numbers, (std::vector<double>{7, -8, 9}));
  ASSERT_EQ(f.tensors().size(), 1u);
  const GgufTensorInfo& t = f.tensors()[0];
  EXPECT_EQ(t.dims, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(t.bytes, 32u);
  float values[8];
  std::memcpy(values, t.data, 32);
  EXPECT_EQ(values[7], 3.5f);
  EXPECT_FALSE(f.get_string("a.u8").is_ok());
  EXPECT_FALSE(f.get_int("nope").is_ok());

  // The same bytes parsed in memory (GgufFile::open_memory, as the fuzzer does): same values,
  // tensor data pointing into the caller's buffer, and the given name in error messages.
  auto in_memory = GgufFile::open_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "hand bytes");
  ASSERT_TRUE(in_memory.is_ok()) << in_memory.status().message();
  EXPECT_EQ((*in_memory)->path(), "hand bytes");
  EXPECT_EQ((*in_memory)->get_int("a.i64").value(), -1234567890123LL);
  ASSERT_EQ((*in_memory)->tensors().size(), 1u);
  EXPECT_EQ((*in_memory)->tensors()[0].data, reinterpret_cast<const uint8_t*>(b.data()) + b.size() - 32);
  auto cut = GgufFile::open_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size() - 1, "cut bytes");
  ASSERT_FALSE(cut.is_ok());
  EXPECT_NE(cut.status().message().find("'cut bytes' is truncated"), std::string::npos) << cut.status().message();
}

TEST(Gguf, WriterRoundTripsEveryKindAndAlignment) {
  for (size_t alignment : {size_t{32}, size_t{64}}) {
    GgufWriter w(alignment);
    w.set_string("s", "héllo");
    w.set_uint32("u", 4000000000u);
    w.set_int32("i", -5);
    w.set_float32("f", 0.25f);
    w.set_bool("b", true);
    w.set_string_array("sa", {"a", "", "ü"});
    w.set_float32_array("fa", {1.5f, -2.0f});
    w.set_int32_array("ia", {1, 2, 3});
    std::vector<uint8_t> t1(3 * 4), t2(34);
    for (size_t i = 0; i < t1.size(); ++i) t1[i] = static_cast<uint8_t>(i * 7);
    for (size_t i = 0; i < t2.size(); ++i) t2[i] = static_cast<uint8_t>(255 - i);
    w.add_tensor("x", DType::F32, {3}, t1);
    w.add_tensor("y", DType::Q8_0, {32}, t2);
    const std::string path = testing::temp_dir() + "/rt.gguf";
    ASSERT_TRUE(w.write(path).is_ok());
    auto file = GgufFile::open(path);
    ASSERT_TRUE(file.is_ok()) << file.status().message();
    const GgufFile& f = **file;
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.get_string("s").value(), "héllo");
    EXPECT_EQ(f.get_int("u").value(), 4000000000LL);
    EXPECT_EQ(f.get_int("i").value(), -5);
    EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("f").value()), 0.25f);
    EXPECT_TRUE(f.get_bool_or("b", false));
    EXPECT_EQ(f.find("sa")->strings, (std::vector<std::string>{"a", "", "ü"}));
    EXPECT_EQ(f.find("fa")->numbers, (std::vector<double>{1.5, -2.0}));
    EXPECT_EQ(f.find("ia")->numbers, (std::vector<double>{1, 2, 3}));
    const GgufTensorInfo* y = f.find_tensor("y");
    ASSERT_NE(y, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(y->data) % alignment, reinterpret_cast<uintptr_t>(f.find_tensor("x")->data) % alignment);
    EXPECT_EQ(std::vector<uint8_t>(y->data, y->data + 34), t2);
    EXPECT_EQ(std::vector<uint8_t>(f.find_tensor("x")->data, f.find_tensor("x")->data + 12), t1);

    // Copying every value through set_value reproduces the same metadata.
    GgufWriter copy;
    for (const auto& [k, v] : f.metadata()) copy.set_value(k, v);
    const std::string path2 = testing::temp_dir() + "/copy.gguf";
    ASSERT_TRUE(copy.write(path2).is_ok());
    auto again = GgufFile::open(path2);
    ASSERT_TRUE(again.is_ok());
    for (const auto& [k, v] : f.metadata()) {
      EXPECT_EQ((*again)->find(k)->to_display_string(), v.to_display_string()) << k;
    }
  }
}

TEST(Gguf, RejectsBadVersionAndHugeCounts) {
  std::string b;
  put<uint32_t>(b, 0x46554747);
  put<uint32_t>(b, 1);
  put<uint64_t>(b, 0);
  put<uint64_t>(b, 0);
  const std::string dir = testing::temp_dir();
  std::ofstream(dir + "/v1.gguf", std::ios::binary) << b;
  auto v1 = GgufFile::open(dir + "/v1.gguf");
  ASSERT_FALSE(v1.is_ok());
  EXPECT_NE(v1.status().message().find("version 1"), std::string::npos);

  std::string huge;
  put<uint32_t>(huge, 0x46554747);
  put<uint32_t>(huge, 3);
  put<uint64_t>(huge, 0);
  put<uint64_t>(huge, uint64_t{1} << 60);
  std::ofstream(dir + "/huge.gguf", std::ios::binary) << huge;
  auto h = GgufFile::open(dir + "/huge.gguf");
  ASSERT_FALSE(h.is_ok());
  EXPECT_NE(h.status().message().find("truncated"), std::string::npos);

  std::string long_string;
  put<uint32_t>(long_string, 0x46554747);
  put<uint32_t>(long_string, 3);
  put<uint64_t>(long_string, 0);
  put<uint64_t>(long_string, 1);
  put<uint64_t>(long_string, uint64_t{1} << 62);  // key length far past the end
  std::ofstream(dir + "/long.gguf", std::ios::binary) << long_string;
  EXPECT_FALSE(GgufFile::open(dir + "/long.gguf").is_ok());
}

// A tensor whose byte size does not fit in 64 bits must be refused, not wrapped around to a small
// size that passes (or seems to fail only for being short) the bounds check: F32 2^31 x 2^31 is
// 2^62 elements, 2^64 bytes (wraps to 0); F32 2^32 x (2^30 + 8) wraps to 2^37 bytes.
TEST(Gguf, RejectsTensorsWhoseByteSizeOverflows) {
  struct Case {
    uint32_t type;
    uint64_t cols, rows;
  };
  const std::string dir = testing::temp_dir();
  for (const Case& c : {Case{0, uint64_t{1} << 31, uint64_t{1} << 31}, Case{0, uint64_t{1} << 32, (uint64_t{1} << 30) + 8}}) {
    std::string b;
    put<uint32_t>(b, 0x46554747);
    put<uint32_t>(b, 3);
    put<uint64_t>(b, 1);
    put<uint64_t>(b, 0);
    put_string(b, "huge.weight");
    put<uint32_t>(b, 2);
    put<uint64_t>(b, c.cols);
    put<uint64_t>(b, c.rows);
    put<uint32_t>(b, c.type);
    put<uint64_t>(b, 0);
    while (b.size() % 32) b += '\0';
    b.append(64, '\0');
    const std::string path = dir + "/huge" + std::to_string(c.rows) + ".gguf";
    std::ofstream(path, std::ios::binary) << b;
    auto file = GgufFile::open(path);
    ASSERT_FALSE(file.is_ok()) << c.cols << " x " << c.rows << ": " << (*file)->tensors()[0].bytes << " bytes";
    EXPECT_NE(file.status().message().find("'huge.weight' is too large"), std::string::npos) << file.status().message();
  }
}

// Integer views of metadata never wrap: a u64 past INT64_MAX (2^64 - 1 used to read as -1, "no
// token") and floats outside int64 (undefined to convert) saturate, so range checks reject them.
TEST(Gguf, IntegerViewsOfMetadataSaturate) {
  std::string b;
  put<uint32_t>(b, 0x46554747);
  put<uint32_t>(b, 3);
  put<uint64_t>(b, 0);
  put<uint64_t>(b, 3);
  put_string(b, "u64.max");
  put<uint32_t>(b, 10);
  put<uint64_t>(b, ~uint64_t{0});
  put_string(b, "f32.huge");
  put<uint32_t>(b, 6);
  put<float>(b, -1e30f);
  put_string(b, "f64.nan");
  put<uint32_t>(b, 12);
  put<double>(b, std::nan(""));
  const std::string path = testing::temp_dir() + "/ints.gguf";
  std::ofstream(path, std::ios::binary) << b;
  auto file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().message();
  EXPECT_EQ((*file)->get_int_or("u64.max", 0), INT64_MAX);
  EXPECT_EQ((*file)->find("u64.max")->uint_value, ~uint64_t{0});
  EXPECT_EQ((*file)->get_int_or("f32.huge", 0), INT64_MIN);
  EXPECT_EQ((*file)->get_int_or("f64.nan", 0), INT64_MIN);
}

// Found by fuzz/gguf_model_fuzzer.cpp (input fuzz/regressions/gguf_model/tensor-size-wraps): an
// F32 tensor of 2^22 x 2^40 elements has 2^62 elements (fits in int64) but 2^64 bytes, which
// wrapped to 0 and passed the end-of-file check with data nowhere in the file.
TEST(Gguf, RejectsTensorWhoseByteSizeWraps) {
  std::string b;
  put<uint32_t>(b, 0x46554747);
  put<uint32_t>(b, 3);
  put<uint64_t>(b, 1);  // one tensor
  put<uint64_t>(b, 0);  // no metadata
  put_string(b, "huge");
  put<uint32_t>(b, 2);
  put<uint64_t>(b, uint64_t{1} << 22);
  put<uint64_t>(b, uint64_t{1} << 40);
  put<uint32_t>(b, 0);  // F32
  put<uint64_t>(b, 0);
  while (b.size() % 32) b += '\0';
  auto file = GgufFile::open_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "wrap.gguf");
  ASSERT_FALSE(file.is_ok());
  EXPECT_NE(file.status().message().find("tensor 'huge' is too large"), std::string::npos) << file.status().message();
  // The committed fuzzer input is exactly these bytes.
  const std::string path = std::string(FRUGAL_SOURCE_DIR) + "/fuzz/regressions/gguf_model/tensor-size-wraps";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << path;
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()), b);
}

}  // namespace
}  // namespace frugal
