// Bad input to the frugal binary: each case must end with one clear error line and exit code 1,
// never a crash (signal), a hang, or silence.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>

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

// Copies the tiny model at `in` to `out` with its metadata and tensors edited: `edit_kv` may
// change the writer after the metadata was copied; `edit_tensor` may change a tensor's dims or
// bytes, or return false to drop it.
using TensorEdit = std::function<bool(const std::string& name, std::vector<int64_t>& dims, std::vector<uint8_t>& bytes)>;
void rewrite_model(const std::string& in, const std::string& out, const std::function<void(GgufWriter&)>& edit_kv,
                   const TensorEdit& edit_tensor) {
  auto file = GgufFile::open(in);
  ASSERT_TRUE(file.is_ok()) << file.status().message();
  GgufWriter w((*file)->alignment());
  for (const auto& [k, v] : (*file)->metadata()) w.set_value(k, v);
  if (edit_kv) edit_kv(w);
  for (const auto& t : (*file)->tensors()) {
    std::vector<int64_t> dims = t.dims;
    std::vector<uint8_t> bytes(t.data, t.data + t.bytes);
    if (edit_tensor && !edit_tensor(t.name, dims, bytes)) continue;
    w.add_tensor(t.name, static_cast<DType>(t.type_id), dims, std::move(bytes));
  }
  ASSERT_TRUE(w.write(out).is_ok());
}

// An extra F32 tensor of 2^31 x 2^31 elements: 2^64 bytes, which wrapped to 0 and passed the
// bounds check (and then `frugal quantize` died of std::length_error, exit 134).
TEST_F(BadInput, TensorWhoseByteSizeOverflows) {
  const std::string path = dir_ + "/huge.gguf", out = dir_ + "/huge-q.gguf";
  rewrite_model(good_, path, [](GgufWriter& w) { w.add_tensor("huge.weight", DType::F32, {int64_t{1} << 31, int64_t{1} << 31}, {}); },
                nullptr);
  expect_clean_failure("info " + shell_quote(path), "'huge.weight' is too large");
  expect_clean_failure("quantize -m " + shell_quote(path) + " -o " + shell_quote(out) + " --format q8_0", "'huge.weight' is too large");
  EXPECT_FALSE(testing::file_exists(out));
}

// Files that `frugal run` must refuse are refused by every command, `frugal quantize` included
// (which used to re-encode them into another file nothing could load), with the same message and
// before any output exists.
TEST_F(BadInput, ModelsTheLoaderRefusesAreRefusedByEveryCommand) {
  const int64_t n_vocab = 256 + 8 + 3;  // the tiny model's vocabulary
  auto keep_tensors = [](const std::string&, std::vector<int64_t>&, std::vector<uint8_t>&) { return true; };
  GgufValue wide_bos;
  wide_bos.type = GgufType::kUint64;
  wide_bos.uint_value = (uint64_t{1} << 32) + 5;  // id 5 once cut to 32 bits
  wide_bos.int_value = static_cast<int64_t>(wide_bos.uint_value);
  struct Case {
    std::string name;
    std::function<void(GgufWriter&)> edit_kv;
    TensorEdit edit_tensor;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"heads", [](GgufWriter& w) { w.set_uint32("llama.attention.head_count", 3); }, keep_tensors, "invalid hyper-parameters"},
      {"huge-head", [](GgufWriter& w) { w.set_uint32("llama.attention.key_length", 1u << 31); }, keep_tensors, "head size"},
      {"missing", nullptr, [](const std::string& name, std::vector<int64_t>&, std::vector<uint8_t>&) { return name != "blk.1.ffn_up.weight"; },
       "missing tensor 'blk.1.ffn_up.weight'"},
      {"shape", nullptr,
       [](const std::string& name, std::vector<int64_t>& dims, std::vector<uint8_t>& bytes) {
         if (name == "blk.0.attn_k.weight") {
           dims[1] /= 2;
           bytes.resize(bytes.size() / 2);
         }
         return true;
       },
       "tensor 'blk.0.attn_k.weight' has shape [64, 16], expected [64, 32]"},
      // The embedding and output head agree with llama.vocab_size, but the tokenizer has more
      // tokens: ids past row 200 would read past the matrices.
      {"vocab", [](GgufWriter& w) { w.set_uint32("llama.vocab_size", 200); },
       [](const std::string& name, std::vector<int64_t>& dims, std::vector<uint8_t>& bytes) {
         if (name == "token_embd.weight" || name == "output.weight") {
           dims[1] = 200;
           bytes.resize(static_cast<size_t>(dims[0]) * 200 * sizeof(float));
         }
         return true;
       },
       "200 rows"},
      {"bos", [](GgufWriter& w) { w.set_uint32("tokenizer.ggml.bos_token_id", 5000); }, keep_tensors, "outside the vocabulary"},
      {"wide-bos", [&](GgufWriter& w) { w.set_value("tokenizer.ggml.bos_token_id", wide_bos); }, keep_tensors, "outside the vocabulary"},
      {"types", [&](GgufWriter& w) { w.set_string_array("tokenizer.ggml.token_type", std::vector<std::string>(n_vocab, "1")); },
       keep_tensors, "tokenizer.ggml.token_type must be an array of integers"},
      {"type-value", [&](GgufWriter& w) { w.set_float32_array("tokenizer.ggml.token_type", std::vector<float>(n_vocab, 1e30f)); },
       keep_tensors, "tokenizer.ggml.token_type must be an array of integers"},
      {"scores", [&](GgufWriter& w) { w.set_string_array("tokenizer.ggml.scores", std::vector<std::string>(n_vocab, "0")); },
       keep_tensors, "tokenizer.ggml.scores must be an array of numbers"},
      {"merges", [](GgufWriter& w) { w.set_int32_array("tokenizer.ggml.merges", {1, 2, 3}); }, keep_tensors,
       "tokenizer.ggml.merges must be an array of strings"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir_ + "/" + c.name + ".gguf", out = dir_ + "/" + c.name + "-q.gguf";
    rewrite_model(good_, path, c.edit_kv, c.edit_tensor);
    expect_clean_failure("run -m " + shell_quote(path) + " -p hi -n 2", c.message);
    expect_clean_failure("info " + shell_quote(path), c.message);
    expect_clean_failure("quantize -m " + shell_quote(path) + " -o " + shell_quote(out) + " --format q8_0", c.message);
    expect_clean_failure("quantize -m " + shell_quote(path) + " -o " + shell_quote(out) + " --bits 3 --group 32", c.message);
    EXPECT_FALSE(testing::file_exists(out));
  }
}

// Running out of memory (here a 1M-token KV cache under a 150 MB address-space limit) ends with
// one error line and exit code 1, not std::bad_alloc escaping main (abort, exit 134).
TEST_F(BadInput, OutOfMemoryIsOneErrorLine) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer needs more address space than the limit leaves";
#else
  const auto r = run_command("ulimit -v 150000; timeout 60 " + shell_quote(testing::frugal_binary()) + " run -m " + shell_quote(good_) +
                             " -p hi -n 2 -c 1048576");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  // Preceded only by the warning that -c exceeds the tiny model's trained context of 256.
  const std::string warning = "frugal: warning: -c 1048576 is more than the 256 positions the model was trained on; text past them is usually poor\n";
  EXPECT_EQ(r.err, warning + "frugal: error: out of memory\n");
#endif
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
