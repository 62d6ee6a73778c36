// GgufWriter's streaming path (declare/begin/write_next/finish) against its in-memory path on the
// tiny model: the same bytes, and a failed or abandoned write leaves no file behind (issue 14).
#include <gtest/gtest.h>
#include <dirent.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "compress/quantize_model.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"

namespace frugal {
namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Every entry of `dir` (the writers' temporary files would show up here).
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  return names;
}

void copy_metadata(const GgufFile& in, GgufWriter& w) {
  for (const auto& [key, value] : in.metadata()) w.set_value(key, value);
}

class StreamWriter : public ::testing::TestWithParam<size_t> {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    in_ = dir_ + "/tiny.gguf";
    testing::TinyModelOptions o;
    o.weight_type = DType::F16;  // 2-byte rows: tensor sizes that are not multiples of 32
    o.n_ff = 80;
    ASSERT_TRUE(testing::write_tiny_model(in_, o).is_ok());
    auto file = GgufFile::open(in_);
    ASSERT_TRUE(file.is_ok());
    file_ = std::move(*file);
  }
  std::string dir_, in_;
  std::unique_ptr<GgufFile> file_;
};

TEST_P(StreamWriter, SameBytesAsInMemoryWriter) {
  const size_t alignment = GetParam();
  GgufWriter memory(alignment), stream(alignment);
  copy_metadata(*file_, memory);
  copy_metadata(*file_, stream);
  // An odd-sized extra tensor exercises padding, an empty one a zero-length write.
  std::vector<uint8_t> odd(3 * 2);
  for (size_t i = 0; i < odd.size(); ++i) odd[i] = static_cast<uint8_t>(i + 1);
  for (const GgufTensorInfo& t : file_->tensors()) {
    memory.add_tensor(t.name, t.traits->type, t.dims, std::vector<uint8_t>(t.data, t.data + t.bytes));
    stream.declare(t.name, t.dims);
  }
  memory.add_tensor("extra.odd", DType::F16, {3}, odd);
  stream.declare("extra.odd", {3});
  const std::string a = dir_ + "/memory.gguf", b = dir_ + "/stream.gguf";
  ASSERT_TRUE(memory.write(a).is_ok());
  ASSERT_TRUE(stream.begin(b).is_ok());
  for (const GgufTensorInfo& t : file_->tensors()) ASSERT_TRUE(stream.write_next(t.traits->type, t.data, t.bytes).is_ok());
  ASSERT_TRUE(stream.write_next(DType::F16, odd.data(), odd.size()).is_ok());
  ASSERT_TRUE(stream.finish().is_ok());
  const auto x = read_all(a), y = read_all(b);
  ASSERT_GT(x.size(), 1000u);
  EXPECT_EQ(x, y);
  // And the file reads back with every tensor at its place.
  auto back = GgufFile::open(b);
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  const GgufTensorInfo* q = (*back)->find_tensor("blk.1.ffn_down.weight");
  const GgufTensorInfo* p = file_->find_tensor("blk.1.ffn_down.weight");
  ASSERT_TRUE(q != nullptr && p != nullptr);
  ASSERT_EQ(q->bytes, p->bytes);
  EXPECT_EQ(0, std::memcmp(q->data, p->data, p->bytes));
}

INSTANTIATE_TEST_SUITE_P(Alignments, StreamWriter, ::testing::Values(size_t{32}, size_t{64}));

TEST_F(StreamWriter, FailedWriteLeavesNoFile) {
  const std::string out = dir_ + "/out.gguf";
  const auto before = entries(dir_);
  {
    GgufWriter w;
    copy_metadata(*file_, w);
    for (const GgufTensorInfo& t : file_->tensors()) w.declare(t.name, t.dims);
    ASSERT_TRUE(w.begin(out).is_ok());
    const GgufTensorInfo& first = file_->tensors()[0];
    ASSERT_TRUE(w.write_next(first.traits->type, first.data, first.bytes).is_ok());
    // A size that does not match the declared shape is refused and the temporary file removed.
    const GgufTensorInfo& second = file_->tensors()[1];
    Status s = w.write_next(second.traits->type, second.data, second.bytes - 2);
    EXPECT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find(second.name), std::string::npos) << s.message();
    EXPECT_FALSE(w.finish().is_ok());
  }
  EXPECT_FALSE(testing::file_exists(out));
  EXPECT_EQ(entries(dir_), before);
  {
    // Abandoned mid-way (an early return in the caller): the destructor removes the temporary file.
    GgufWriter w;
    for (const GgufTensorInfo& t : file_->tensors()) w.declare(t.name, t.dims);
    ASSERT_TRUE(w.begin(out).is_ok());
    EXPECT_EQ(entries(dir_).size(), before.size() + 1);
  }
  EXPECT_FALSE(testing::file_exists(out));
  EXPECT_EQ(entries(dir_), before);
  {
    // Fewer tensors than declared: finish refuses.
    GgufWriter w;
    for (const GgufTensorInfo& t : file_->tensors()) w.declare(t.name, t.dims);
    ASSERT_TRUE(w.begin(out).is_ok());
    Status s = w.finish();
    EXPECT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("never written"), std::string::npos) << s.message();
  }
  EXPECT_FALSE(testing::file_exists(out));
  EXPECT_EQ(entries(dir_), before);
  GgufWriter w;
  w.declare("x", {4});
  Status s = w.begin(dir_ + "/no/such/dir/out.gguf");
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("no/such/dir"), std::string::npos) << s.message();
}

// quantize (streamed) of the tiny model: a quantization that fails mid-stream (ffn_down's rows
// of 80 are no multiple of q8_0's 32, found after earlier tensors were written) or at its last
// step (the output name is taken by a directory, so the rename fails) leaves no file; a good one
// loads with every input tensor.
TEST_F(StreamWriter, QuantizeStreamsAndCleansUp) {
  QuantizeOptions options;
  options.format = "q8_0";
  const auto before = entries(dir_);
  auto mid = quantize_model(in_, dir_ + "/mid.gguf", options, nullptr);
  ASSERT_FALSE(mid.is_ok());
  EXPECT_NE(mid.status().message().find("ffn_down"), std::string::npos) << mid.status().message();
  EXPECT_EQ(entries(dir_), before);

  const std::string good = dir_ + "/good.gguf", out = dir_ + "/q.gguf";
  ASSERT_TRUE(testing::write_tiny_model(good, testing::TinyModelOptions{}).is_ok());
  auto report = quantize_model(good, out, options, nullptr);
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  auto back = GgufFile::open(out);
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  auto source = GgufFile::open(good);
  ASSERT_TRUE(source.is_ok());
  EXPECT_EQ((*back)->tensors().size(), (*source)->tensors().size());
  EXPECT_EQ((*back)->find_tensor("blk.0.attn_q.weight")->traits->type, DType::Q8_0);

  const std::string bad = dir_ + "/taken";
  ASSERT_EQ(0, mkdir(bad.c_str(), 0700));
  const auto with_dir = entries(dir_);
  auto failed = quantize_model(good, bad, options, nullptr);
  ASSERT_FALSE(failed.is_ok());
  EXPECT_NE(failed.status().message().find("taken"), std::string::npos) << failed.status().message();
  EXPECT_EQ(entries(dir_), with_dir);
  EXPECT_TRUE(entries(bad).empty());
}

}  // namespace
}  // namespace frugal
