// Bad input to the frugal binary: each case must end with one clear error line and exit code 1,
// never a crash (signal), a hang, or silence.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "io/gguf_writer.h"
#include "support/test_support.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

// Runs `frugal ARGS` and checks for a clean failure whose message contains `expected`.
void expect_clean_failure(const std::string& args, const std::string& expected) {
  const auto r = run_command("timeout 60 " + shell_quote(testing::frugal_binary()) + " " + args);
  EXPECT_EQ(r.exit_code, 1) << "args: " << args << "\nstderr: " << r.err;
  ASSERT_FALSE(r.err.empty()) << args;
  EXPECT_EQ(r.err.rfind("frugal: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected: " << r.err;
  EXPECT_NE(r.err.find(expected), std::string::npos) << "expected '" << expected << "' in: " << r.err;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    good_ = dir_ + "/good.gguf";
    ASSERT_TRUE(testing::write_tiny_model(good_, {}).is_ok());
  }
  std::string dir_, good_;
};

TEST_F(BadInput, MissingFile) {
  expect_clean_failure("info " + shell_quote(dir_ + "/nope.gguf"), "cannot open");
  expect_clean_failure("run -m " + shell_quote(dir_ + "/nope.gguf") + " -p hi", "cannot open");
}

TEST_F(BadInput, EmptyFile) {
  write_bytes(dir_ + "/empty.gguf", "");
  expect_clean_failure("info " + shell_quote(dir_ + "/empty.gguf"), "empty");
}

TEST_F(BadInput, NotGguf) {
  write_bytes(dir_ + "/text.gguf", "this is not a model, just some text\n");
  expect_clean_failure("info " + shell_quote(dir_ + "/text.gguf"), "not a GGUF file");
  expect_clean_failure("info " + shell_quote(dir_), "directory");
}

TEST_F(BadInput, TruncatedFileAtEveryRegion) {
  const std::string bytes = read_bytes(good_);
  // Cut inside the header, the metadata, the tensor infos and the tensor data.
  for (size_t cut : {size_t{6}, size_t{30}, size_t{2000}, bytes.size() / 3, bytes.size() - 7}) {
    const std::string path = dir_ + "/cut" + std::to_string(cut) + ".gguf";
    write_bytes(path, bytes.substr(0, cut));
    expect_clean_failure("info " + shell_quote(path), "truncated");
  }
}

TEST_F(BadInput, TensorPastTheEndOfTheFile) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.add_tensor("token_embd.weight", DType::F32, {8, 4}, std::vector<uint8_t>(8 * 4 * 4));
  const std::string path = dir_ + "/short.gguf";
  ASSERT_TRUE(w.write(path).is_ok());
  std::string bytes = read_bytes(path);
  // The tensor info's offset is the last 8 bytes before the alignment padding of the header:
  // point it 1 MiB further.
  const std::string name = "token_embd.weight";
  size_t at = bytes.find(name) + name.size() + 4 + 2 * 8 + 4;
  uint64_t offset = 1 << 20;
  bytes.replace(at, 8, reinterpret_cast<const char*>(&offset), 8);
  write_bytes(path, bytes);
  expect_clean_failure("info " + shell_quote(path), "past the end");
}

TEST_F(BadInput, UnknownTensorType) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.add_tensor("token_embd.weight", static_cast<DType>(77), {32, 4}, std::vector<uint8_t>(256));
  const std::string path = dir_ + "/type.gguf";
  ASSERT_TRUE(w.write(path).is_ok());
  expect_clean_failure("info " + shell_quote(path), "does not support");
}

TEST_F(BadInput, UnsupportedArchitecture) {
  GgufWriter w;
  w.set_string("general.architecture", "mamba");
  w.set_string("tokenizer.ggml.model", "gpt2");
  const std::string path = dir_ + "/mamba.gguf";
  ASSERT_TRUE(w.write(path).is_ok());
  expect_clean_failure("info " + shell_quote(path), "unsupported architecture 'mamba'");
}

TEST_F(BadInput, MissingTensor) {
  testing::TinyModelOptions o;
  GgufWriter w;
  const std::string path = dir_ + "/notensors.gguf";
  ASSERT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok());
  for (const auto& [k, v] : (*file)->metadata()) w.set_value(k, v);
  const std::string stripped = dir_ + "/stripped.gguf";
  ASSERT_TRUE(w.write(stripped).is_ok());
  expect_clean_failure("info " + shell_quote(stripped), "missing tensor 'token_embd.weight'");
}

TEST_F(BadInput, PromptLongerThanTheContext) {
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "the the ";
  expect_clean_failure("run -m " + shell_quote(good_) + " -c 16 -n 4 -p " + shell_quote(prompt), "longer than the context");
}

TEST_F(BadInput, MalformedFlags) {
  expect_clean_failure("run -m " + shell_quote(good_) + " -p hi -n many", "-n expects an integer");
  expect_clean_failure("run -m " + shell_quote(good_) + " -p hi --temp -1", "--temp must be between");
  expect_clean_failure("run -m " + shell_quote(good_) + " -p hi --bogus 1", "unknown flag --bogus");
  expect_clean_failure("perplexity -m " + shell_quote(good_) + " -f " + shell_quote(dir_ + "/missing.txt"), "cannot open");
  expect_clean_failure("frobnicate", "unknown command");
}

TEST_F(BadInput, GoodFileStillWorks) {
  const auto r = run_command(shell_quote(testing::frugal_binary()) + " run -m " + shell_quote(good_) + " -p 'the' -n 4 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("the", 0), 0u);
  const auto info = run_command(shell_quote(testing::frugal_binary()) + " info " + shell_quote(good_));
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("architecture:    llama"), std::string::npos) << info.out;
}

}  // namespace
}  // namespace frugal
