// Test helpers (see test_support.h).
#include "test_support.h"

#include <algorithm>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

#include "io/gguf_names.h"
#include "io/utf8.h"
#include "io/gguf_writer.h"

namespace frugal::testing {
namespace {

std::string cache_dir() {
  if (const char* c = std::getenv("FRUGAL_CACHE"); c != nullptr && *c) return c;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/frugal";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
std::vector<std::string> byte_tokens() {
  std::vector<std::string> out(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    append_utf8(out[b], printable ? b : next++);
  }
  return out;
}

// Row by row: the same bytes as one long row for the block formats, and the right layout for the
// row formats (sparse-q8/q4 and N:M keep a row's masks, scales and values apart).
std::vector<uint8_t> encode(DType type, const std::vector<float>& values, int64_t cols = 0) {
  const TypeTraits& t = type_traits(type);
  const int64_t n = static_cast<int64_t>(values.size());
  if (cols <= 0) cols = n;
  const size_t stride = row_bytes(t, cols);
  std::vector<uint8_t> bytes(stride * static_cast<size_t>(n / cols));
  for (int64_t r = 0; r < n / cols; ++r) t.quantize_row(values.data() + r * cols, bytes.data() + r * stride, cols);
  return bytes;
}

}  // namespace

std::string real_model_path() {
  if (const char* m = std::getenv("FRUGAL_MODEL"); m != nullptr && *m) return m;
  return cache_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string peer_tool(const std::string& name) {
  if (const char* b = std::getenv("FRUGAL_PEER_BIN"); b != nullptr && *b) return std::string(b) + "/" + name;
  return cache_dir() + "/peer/build-0.3.36/bin/" + name;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string data_path(const std::string& name) {
  if (const char* d = std::getenv("FRUGAL_DATA"); d != nullptr && *d) return std::string(d) + "/" + name;
  return std::string(FRUGAL_SOURCE_DIR) + "/../shared/data/" + name;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''"; else out += c;
  }
  return out + "'";
}

std::string frugal_binary() { return FRUGAL_BINARY; }

namespace {
// Every directory temp_dir() made, removed when the test process exits: the real tests write
// models of up to 1.3 GB, and leaving them behind filled the disk after a few hundred runs.
// Only the creating process removes them (a forked child that exits must not delete its
// parent's files).
class TempDirRegistry {
 public:
  void add(const std::string& dir) {
    std::lock_guard<std::mutex> lock(mutex_);
    dirs_.push_back(dir);
  }
  ~TempDirRegistry() {
    if (getpid() != owner_) return;
    for (const std::string& dir : dirs_) {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> dirs_;
  pid_t owner_ = getpid();
};

TempDirRegistry& temp_dir_registry() {
  static TempDirRegistry registry;
  return registry;
}
}  // namespace

std::string temp_dir() {
  std::string pattern = "/tmp/frugal-test-XXXXXX";
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) return std::string("/tmp");
  temp_dir_registry().add(made);
  return std::string(made);
}

CommandResult run_command(const std::string& command) {
  const std::string dir = temp_dir();
  const std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  const std::string full = command + " </dev/null >" + shell_quote(out_path) + " 2>" + shell_quote(err_path);
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  rmdir(dir.c_str());
  return r;
}

Status write_tiny_model(const std::string& path, const TinyModelOptions& o) {
  std::vector<std::string> tokens = byte_tokens();
  std::vector<std::string> merges = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s"};
  merges.resize(static_cast<size_t>(std::clamp<int64_t>(o.n_merges, 0, static_cast<int64_t>(merges.size()))));
  for (const auto& m : merges) {
    const auto space = m.find(' ');
    tokens.push_back(m.substr(0, space) + m.substr(space + 1));
  }
  std::vector<int32_t> types(tokens.size(), 1);
  for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    tokens.push_back(special);
    types.push_back(3);  // control
  }
  const int64_t n_vocab = static_cast<int64_t>(tokens.size());
  const int32_t endoftext = static_cast<int32_t>(n_vocab - 3);

  GgufWriter w;
  const std::string arch = o.gemma3 ? "gemma3" : "llama";
  const int64_t head_dim = o.n_embd / o.n_head;
  w.set_string(names::kArchitectureKey, arch);
  w.set_string("general.name", "tiny random " + arch);
  w.set_uint32(arch + ".context_length", static_cast<uint32_t>(o.n_ctx_train));
  w.set_uint32(arch + ".embedding_length", static_cast<uint32_t>(o.n_embd));
  w.set_uint32(arch + ".block_count", static_cast<uint32_t>(o.n_layer));
  w.set_uint32(arch + ".feed_forward_length", static_cast<uint32_t>(o.n_ff));
  w.set_uint32(arch + ".attention.head_count", static_cast<uint32_t>(o.n_head));
  w.set_uint32(arch + ".attention.head_count_kv", static_cast<uint32_t>(o.n_head_kv));
  w.set_float32(arch + ".rope.freq_base", o.gemma3 ? 1000000.0f : 10000.0f);
  w.set_float32(arch + ".attention.layer_norm_rms_epsilon", o.gemma3 ? 1e-6f : 1e-5f);
  w.set_uint32(arch + ".rope.dimension_count", static_cast<uint32_t>(head_dim));
  if (o.gemma3) {
    w.set_uint32(arch + ".attention.key_length", static_cast<uint32_t>(head_dim));
    w.set_uint32(arch + ".attention.value_length", static_cast<uint32_t>(head_dim));
    w.set_uint32(arch + ".attention.sliding_window", static_cast<uint32_t>(o.sliding_window));
    w.set_uint32(arch + ".attention.sliding_window_pattern", static_cast<uint32_t>(o.sliding_window_pattern));
    w.set_float32(arch + ".rope.freq_base_swa", 10000.0f);
    w.set_float32(arch + ".final_logit_softcapping", 30.0f);
  }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "smollm");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_int32_array("tokenizer.ggml.token_type", types);
  w.set_string_array("tokenizer.ggml.merges", merges);
  w.set_uint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(endoftext));
  w.set_uint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(endoftext));
  w.set_bool("tokenizer.ggml.add_bos_token", false);
  w.set_string("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}");

  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](int64_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng) * scale;
    return v;
  };
  auto matrix = [&](const std::string& name, int64_t cols, int64_t rows) {
    w.add_tensor(name, o.weight_type, {cols, rows}, encode(o.weight_type, random(cols * rows, 1.0f / std::sqrt(static_cast<float>(cols))), cols));
  };
  auto norm = [&](const std::string& name, int64_t n) {
    std::vector<float> v = random(n, 0.1f);
    for (auto& x : v) x += 1.0f;
    w.add_tensor(name, DType::F32, {n}, encode(DType::F32, v));
  };
  // Gemma's embeddings are scaled up by sqrt(n_embd) at run time: store them small.
  const float embedding_std = o.gemma3 ? 1.0f / std::sqrt(static_cast<float>(o.n_embd)) : 1.0f;
  w.add_tensor(names::kTokenEmbedding, o.weight_type, {o.n_embd, n_vocab}, encode(o.weight_type, random(o.n_embd * n_vocab, embedding_std), o.n_embd));
  norm(names::kOutputNorm, o.n_embd);
  if (!o.tied_output) matrix(names::kOutput, o.n_embd, n_vocab);
  using names::BlockTensor;
  for (int64_t i = 0; i < o.n_layer; ++i) {
    auto p = [i](BlockTensor t) { return names::block_tensor(i, t); };
    norm(p(BlockTensor::kAttnNorm), o.n_embd);
    norm(p(BlockTensor::kFfnNorm), o.n_embd);
    if (o.gemma3) {
      norm(p(BlockTensor::kQNorm), head_dim);
      norm(p(BlockTensor::kKNorm), head_dim);
      norm(p(BlockTensor::kPostAttnNorm), o.n_embd);
      norm(p(BlockTensor::kPostFfnNorm), o.n_embd);
    }
    matrix(p(BlockTensor::kQ), o.n_embd, o.n_head * head_dim);
    matrix(p(BlockTensor::kK), o.n_embd, o.n_head_kv * head_dim);
    matrix(p(BlockTensor::kV), o.n_embd, o.n_head_kv * head_dim);
    matrix(p(BlockTensor::kAttnOutput), o.n_head * head_dim, o.n_embd);
    matrix(p(BlockTensor::kGate), o.n_embd, o.n_ff);
    matrix(p(BlockTensor::kUp), o.n_embd, o.n_ff);
    matrix(p(BlockTensor::kDown), o.n_ff, o.n_embd);
  }
  return w.write(path);
}

}  // namespace frugal::testing
